package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Labels and annotation keys of the OCI image spec.
const (
	labelSource   = "org.opencontainers.image.source"
	labelVersion  = "org.opencontainers.image.version"
	labelRevision = "org.opencontainers.image.revision"
	labelLicenses = "org.opencontainers.image.licenses"
	labelCreated  = "org.opencontainers.image.created"
	annotRefName  = "org.opencontainers.image.ref.name"
	license       = "AGPL-3.0"
	cliVersionVar = "gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/cli.Version"
)

// meta is what every image records about its build.
type meta struct {
	version  string
	revision string
	source   string
	created  time.Time // SOURCE_DATE_EPOCH: every time in the image
}

func (m meta) labels() map[string]string {
	return map[string]string{
		labelSource:   m.source,
		labelVersion:  m.version,
		labelRevision: m.revision,
		labelLicenses: license,
		labelCreated:  m.created.UTC().Format(time.RFC3339),
	}
}

// platformImage is one platform's image of an index.
type platformImage struct {
	platform v1.Platform
	image    v1.Image
}

// imageOnEmpty puts layers on an empty base with config cfg (OS,
// architecture and created filled in), as an OCI manifest.
func imageOnEmpty(p v1.Platform, cfg v1.Config, m meta, comment string, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	adds := make([]mutate.Addendum, 0, len(layers))
	for _, l := range layers {
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{
			Created: v1.Time{Time: m.created}, CreatedBy: "imagebuild " + comment, Comment: comment,
		}})
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: m.created}
	cfg.Labels = m.labels()
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// writeLayout writes the images as one OCI image index into an OCI image
// layout at dir (replaced), tagged m.version in index.json; it returns the
// index digest.
func writeLayout(dir string, images []platformImage, m meta) (v1.Hash, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pi := range images {
		p := pi.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        pi.image,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	idx = mutate.Annotations(idx, m.labels()).(v1.ImageIndex)
	digest, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{annotRefName: m.version})); err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	return digest, nil
}

// parsePlatform reads os/arch[/variant].
func parsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return v1.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// goBuild builds pkg of the module at moduleDir, static and stripped, for
// one platform, stamped with the version; the flags are `make build`'s
// (CGO_ENABLED=0, -trimpath) so Go's build cache is shared.
func goBuild(ctx context.Context, moduleDir, pkg, out string, p v1.Platform, version string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X "+cliVersionVar+"="+version, "-o", out, pkg)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Architecture == "arm" && p.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s/%s: %w", pkg, p.OS, p.Architecture, err)
	}
	return nil
}

// orchestratorConfig is the orchestrator's runtime configuration: uid/gid
// 2001 (the project user, as the chart's securityContext), the API and
// health ports, `serve` by default.
func orchestratorConfig() v1.Config {
	return v1.Config{
		User:       "2001:2001",
		Entrypoint: []string{"/cocalc-k8s"},
		Cmd:        []string{"serve"},
		ExposedPorts: map[string]struct{}{
			"8470/tcp": {},
			"8471/tcp": {},
		},
		Env: []string{"PATH=/"},
	}
}

// buildOrchestrator builds cocalc-k8s for each platform and writes the
// multi-platform layout.
func buildOrchestrator(ctx context.Context, moduleDir, pkg, outDir string, platforms []v1.Platform, m meta) (v1.Hash, error) {
	tmp, err := os.MkdirTemp("", "imagebuild-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(tmp)
	var images []platformImage
	for _, p := range platforms {
		bin := filepath.Join(tmp, p.OS+"-"+p.Architecture+p.Variant)
		if err := goBuild(ctx, moduleDir, pkg, bin, p, m.version); err != nil {
			return v1.Hash{}, err
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return v1.Hash{}, err
		}
		layer, err := layerFromFiles([]fileEntry{{path: "cocalc-k8s", mode: 0o755, data: data}}, m.created)
		if err != nil {
			return v1.Hash{}, err
		}
		img, err := imageOnEmpty(p, orchestratorConfig(), m, "cocalc-k8s "+m.version, layer)
		if err != nil {
			return v1.Hash{}, err
		}
		images = append(images, platformImage{platform: p, image: img})
	}
	return writeLayout(outDir, images, m)
}

// nfsServerConfig is tools/images/nfs-server/Dockerfile's runtime
// configuration: ganesha.nfsd in the foreground with the chart's
// configuration, logging to stdout, NFSv4 on 2049/tcp, uid 0 (the chart
// drops every capability but four).
func nfsServerConfig() v1.Config {
	return v1.Config{
		Entrypoint: []string{"/usr/bin/ganesha.nfsd", "-F", "-L", "STDOUT",
			"-f", "/etc/ganesha/ganesha.conf", "-p", "/run/ganesha.pid", "-N", "NIV_EVENT"},
		ExposedPorts: map[string]struct{}{"2049/tcp": {}},
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
}

// backupConfig is tools/images/backup/Dockerfile's runtime configuration:
// the project user (uid/gid 2001, the owner of every home), HOME on the
// /tmp emptyDir (the root filesystem is read-only), no entrypoint (the
// chart's CronJobs run `bash /scripts/backup.sh database|homes`) and
// `restic version` as the default command.
func backupConfig() v1.Config {
	return v1.Config{
		User: "2001:2001",
		Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp"},
		Cmd:  []string{"restic", "version"},
	}
}

// goBinary is a program of this repository's module that an image built
// from a root filesystem carries on top of it.
type goBinary struct {
	pkg  string // package path relative to the module root, e.g. ./tools/cmd/cocalc-dbdump
	path string // where the image holds it, without a leading slash
}

// rootfsImage is one `imagebuild rootfs -config` choice: the runtime
// configuration and the Go programs added as a second layer.
type rootfsImage struct {
	config   func() v1.Config
	binaries []goBinary
}

// rootfsConfigs are the choices of `imagebuild rootfs -config`. The backup
// image carries cocalc-dbdump: the embedded database's dump server in the
// server pod and its client in the database backup Job (the same static
// build tools/images/backup/Dockerfile makes in its first stage).
var rootfsConfigs = map[string]rootfsImage{
	"nfs-server": {config: nfsServerConfig},
	"backup": {config: backupConfig, binaries: []goBinary{
		{pkg: "./tools/cmd/cocalc-dbdump", path: "usr/local/bin/cocalc-dbdump"},
	}},
}

// buildRootfs turns a root filesystem directory into an image: one layer of
// the directory, plus one of the configuration's Go programs (built from the
// module at moduleDir for the platform) when it has any.
func buildRootfs(ctx context.Context, rootfs, moduleDir, outDir string, p v1.Platform, ri rootfsImage, m meta) (v1.Hash, error) {
	layer, err := layerFromDir(rootfs, tarOptions{
		mtime:        m.created,
		skipContents: map[string]bool{"proc": true, "sys": true, "dev": true, "run": true, "tmp": true},
	})
	if err != nil {
		return v1.Hash{}, err
	}
	layers := []v1.Layer{layer}
	if len(ri.binaries) > 0 {
		tmp, err := os.MkdirTemp("", "imagebuild-")
		if err != nil {
			return v1.Hash{}, err
		}
		defer os.RemoveAll(tmp)
		var files []fileEntry
		for i, b := range ri.binaries {
			out := filepath.Join(tmp, fmt.Sprint(i))
			if err := goBuild(ctx, moduleDir, b.pkg, out, p, m.version); err != nil {
				return v1.Hash{}, err
			}
			data, err := os.ReadFile(out)
			if err != nil {
				return v1.Hash{}, err
			}
			files = append(files, fileEntry{path: b.path, mode: 0o755, data: data})
		}
		bins, err := layerFromFiles(files, m.created)
		if err != nil {
			return v1.Hash{}, err
		}
		layers = append(layers, bins)
	}
	img, err := imageOnEmpty(p, ri.config(), m, "rootfs "+filepath.Base(rootfs), layers...)
	if err != nil {
		return v1.Hash{}, err
	}
	return writeLayout(outDir, []platformImage{{platform: p, image: img}}, m)
}
