package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

// kindName is the default kind cluster's name (its node:
// cocalc-control-plane).
const kindName = "cocalc"

// The kind cluster the command works on (-name) and its state directory;
// selectKind sets them and cluster.EnvKindState, so cluster.Attach finds
// the same cluster.
var (
	kindCluster = kindName
	kindState   string
)

func selectKind(name string) error {
	dir, err := cluster.KindStateDir(name)
	if err != nil {
		return err
	}
	kindCluster, kindState = name, dir
	return os.Setenv(cluster.EnvKindState, dir)
}

// kindImages are built from this repository and loaded into the node:
// what values/kind.yaml names, plus nothing else. The orchestrator image
// is the same static binary tools/images/orchestrator/Dockerfile builds.
var kindImages = []cluster.GoImage{
	{Ref: "cocalc-kubernetes/hub-standin:dev", Package: "./test/standins/hub", Binary: "/hub", Aliases: []string{"/bin/chown"}, User: "2001:2001"},
	{Ref: "cocalc-kubernetes/project-standin:dev", Package: "./test/standins/project", Binary: "/project", Aliases: []string{"/bin/true"}, User: "2001:2001"},
	{Ref: "cocalc-kubernetes/orchestrator:dev", Package: "./tools/cmd/cocalc-k8s", Binary: "/cocalc-k8s", User: "2001:2001"},
}

func imageRefs() []string {
	refs := make([]string, len(kindImages))
	for i, img := range kindImages {
		refs[i] = img.Ref
	}
	return refs
}

// upKind creates the kind cluster from the node image ci/kind/images.sh
// built (or -node-image, e.g. kindest/node where a registry is reachable),
// with kube-router enforcing NetworkPolicies and the test images loaded.
func upKind(nodeImage string, nodes int, timeout time.Duration) error {
	root, err := cluster.RepoRoot()
	if err != nil {
		return err
	}
	dir := kindState
	if nodes < 1 {
		return fmt.Errorf("-nodes=%d: want at least 1", nodes)
	}
	if nodeImage == "" {
		v, err := pinnedKubernetesVersion(root)
		if err != nil {
			return err
		}
		nodeImage = "cocalc.local/kind-node:" + v
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logf := func(format string, args ...any) { slog.Info(fmt.Sprintf(format, args...)) }
	if err := cluster.EnsureDocker(ctx, filepath.Join(root, ".cache", "kind", "dockerd.log"), logf); err != nil {
		return err
	}
	// Already up (make up twice, make cluster-kind after make up): bring
	// its images up to date and reuse it.
	if c, err := cluster.Attach(ctx, cluster.TierKind); err == nil {
		logf("kind cluster %s is already running; reloading the test images", c.Name)
		if err := reloadKindImages(timeout); err != nil {
			return err
		}
		fmt.Printf("export KUBECONFIG=%s\n", c.KubeconfigPath)
		return nil
	}
	if err := cluster.BuildGoImages(ctx, root, kindImages, logf); err != nil {
		return err
	}
	t0 := time.Now()
	c, err := cluster.CreateKind(ctx, cluster.KindOptions{
		Name:          kindCluster,
		Workers:       nodes - 1,
		NodeImage:     nodeImage,
		StateDir:      dir,
		Manifests:     []string{filepath.Join(root, "ci", "kind", "kube-router.yaml")},
		Images:        imageRefs(),
		DockerShimDir: cluster.DockerShimDir(root),
		ProbeImage:    cluster.ProbeImage,
		// Only an image named on the command line (kindest/node where a
		// registry is reachable) may be pulled; ours are built here.
		AllowPull: !strings.HasPrefix(nodeImage, "cocalc.local/"),
		Logf:      logf,
	})
	if err != nil {
		return err
	}
	logf("kind cluster %s ready in %s", c.Name, time.Since(t0).Round(time.Second))
	fmt.Printf("export KUBECONFIG=%s\n", c.KubeconfigPath)
	return nil
}

// reloadKindImages rebuilds the test images and loads them into the
// running kind cluster (after a source change; `make test-kind` does this).
func reloadKindImages(timeout time.Duration) error {
	root, err := cluster.RepoRoot()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logf := func(format string, args ...any) { slog.Info(fmt.Sprintf(format, args...)) }
	if err := cluster.BuildGoImages(ctx, root, kindImages, logf); err != nil {
		return err
	}
	if err := cluster.UseDockerShimIfNeeded(ctx, cluster.DockerShimDir(root), cluster.ProbeImage); err != nil {
		return err
	}
	return cluster.LoadImages(ctx, kindCluster, imageRefs()...)
}

func downKind() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) { slog.Info(fmt.Sprintf(format, args...)) }
	return cluster.DeleteKind(ctx, kindCluster, kindState, logf)
}

// pinnedKubernetesVersion reads the k8s.io/kubernetes version the cluster
// binaries are built from (ci/tools/kube/go.mod).
func pinnedKubernetesVersion(root string) (string, error) {
	path := filepath.Join(root, "ci", "tools", "kube", "go.mod")
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(s.Text()), "require "))
		if len(fields) >= 2 && fields[0] == "k8s.io/kubernetes" {
			return fields[1], nil
		}
	}
	return "", fmt.Errorf("%s: no k8s.io/kubernetes requirement", path)
}
