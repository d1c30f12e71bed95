package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"gopkg.in/yaml.v3"
)

// chartImages maps each image directory name under the layouts directory
// to the chart's value holding its reference.
var chartImages = map[string][]string{
	"orchestrator": {"orchestrator", "image"},
	"nfs-server":   {"storage", "nfsServer", "image"},
	"server":       {"server", "image"},
	"project":      {"projects", "image"},
	"backup":       {"backup", "image"},
}

// loopbackRegistry reports whether registry (host[:port][/path]) is on
// this machine: only those are reached over plain HTTP.
func loopbackRegistry(registry string) bool {
	host := strings.SplitN(registry, "/", 2)[0]
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readLayoutIndex returns the image index a layout written by this tool
// holds (its index.json's single entry).
func readLayoutIndex(dir string) (v1.ImageIndex, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("layout %s: %w", dir, err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("layout %s: %w", dir, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("layout %s: %d entries in index.json, want 1", dir, len(im.Manifests))
	}
	return top.ImageIndex(im.Manifests[0].Digest)
}

// pushLayout pushes the layout's entry (an image index, or one image as
// docker buildx writes a single-platform build) as ref and returns its
// digest.
func pushLayout(ctx context.Context, dir string, ref name.Tag) (v1.Hash, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	if len(im.Manifests) != 1 {
		return v1.Hash{}, fmt.Errorf("layout %s: %d entries in index.json, want 1", dir, len(im.Manifests))
	}
	desc := im.Manifests[0]
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	if desc.MediaType.IsImage() {
		img, err := top.Image(desc.Digest)
		if err != nil {
			return v1.Hash{}, err
		}
		if err := remote.Write(ref, img, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
		}
		return desc.Digest, nil
	}
	idx, err := top.ImageIndex(desc.Digest)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return desc.Digest, nil
}

// pushedImage is one image publish pushed.
type pushedImage struct {
	name       string
	repository string
	tag        string
	digest     v1.Hash
}

// publishOptions are publish's inputs (the flags of `imagebuild publish`).
type publishOptions struct {
	registry, version, layouts, chart, helm string
	require                                 []string
	// plainHTTP talks HTTP to a registry that is not on loopback (a test
	// cluster's own registry); a loopback registry always gets HTTP.
	plainHTTP bool
}

// publish pushes every layout under layouts whose name the chart knows,
// then packages the chart with their references (repository, tag, digest)
// in a copy of its values.yaml and pushes it to oci://registry/charts.
func publish(ctx context.Context, o publishOptions) ([]pushedImage, string, error) {
	registry, version, layouts, chart, helm, require := o.registry, o.version, o.layouts, o.chart, o.helm, o.require
	plainHTTP := o.plainHTTP || loopbackRegistry(registry)
	for _, r := range require {
		if _, known := chartImages[r]; !known {
			return nil, "", fmt.Errorf("-require %s: not an image of the chart", r)
		}
		if _, err := os.Stat(filepath.Join(layouts, r, "index.json")); err != nil {
			return nil, "", fmt.Errorf("required image %s: no layout in %s: %w", r, layouts, err)
		}
	}
	opts := []name.Option{name.StrictValidation}
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	var pushed []pushedImage
	entries, err := os.ReadDir(layouts)
	if err != nil {
		return nil, "", fmt.Errorf("image layouts: %w (run make images)", err)
	}
	for _, e := range entries {
		if _, known := chartImages[e.Name()]; !known || !e.IsDir() {
			continue
		}
		repo := registry + "/" + e.Name()
		ref, err := name.NewTag(repo+":"+version, opts...)
		if err != nil {
			return nil, "", err
		}
		digest, err := pushLayout(ctx, filepath.Join(layouts, e.Name()), ref)
		if err != nil {
			return nil, "", err
		}
		pushed = append(pushed, pushedImage{name: e.Name(), repository: repo, tag: version, digest: digest})
	}
	if len(pushed) == 0 {
		return nil, "", fmt.Errorf("no image layout under %s (run make images)", layouts)
	}

	tmp, err := os.MkdirTemp("", "publish-chart-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(tmp)
	copy := filepath.Join(tmp, filepath.Base(chart))
	if err := os.CopyFS(copy, os.DirFS(chart)); err != nil {
		return nil, "", fmt.Errorf("copy chart: %w", err)
	}
	valuesPath := filepath.Join(copy, "values.yaml")
	values, err := os.ReadFile(valuesPath)
	if err != nil {
		return nil, "", err
	}
	for _, p := range pushed {
		at := chartImages[p.name]
		for key, val := range map[string]string{"repository": p.repository, "tag": p.tag, "digest": p.digest.String()} {
			if values, err = setScalar(values, append(append([]string{}, at...), key), val); err != nil {
				return nil, "", err
			}
		}
	}
	if err := os.WriteFile(valuesPath, values, 0o644); err != nil {
		return nil, "", err
	}
	pkgDir := filepath.Join(tmp, "pkg")
	if err := runHelm(ctx, helm, "package", copy, "--version", version, "--app-version", version, "--destination", pkgDir); err != nil {
		return nil, "", err
	}
	tgz := filepath.Join(pkgDir, filepath.Base(chart)+"-"+version+".tgz")
	args := []string{"push", tgz, "oci://" + registry + "/charts"}
	if plainHTTP {
		args = append(args, "--plain-http")
	}
	if err := runHelm(ctx, helm, args...); err != nil {
		return nil, "", err
	}
	return pushed, "oci://" + registry + "/charts/" + filepath.Base(chart), nil
}

func runHelm(ctx context.Context, helm string, args ...string) error {
	cmd := exec.CommandContext(ctx, helm, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("helm %s: %w: %s", args[0], err, out.String())
	}
	os.Stderr.Write(out.Bytes())
	return nil
}

// setScalar replaces the scalar at path in a YAML document in place, on its
// own line, so comments and layout of the rest of the file are kept.
func setScalar(doc []byte, path []string, value string) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, err
	}
	n := &root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, key := range path {
		var next *yaml.Node
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					next = n.Content[i+1]
				}
			}
		}
		if next == nil {
			return nil, fmt.Errorf("values: no key %s", strings.Join(path, "."))
		}
		n = next
	}
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("values: %s is not a scalar", strings.Join(path, "."))
	}
	lines := bytes.Split(doc, []byte("\n"))
	i := n.Line - 1
	if i < 0 || i >= len(lines) || n.Column-1 > len(lines[i]) {
		return nil, fmt.Errorf("values: %s: position %d:%d out of range", strings.Join(path, "."), n.Line, n.Column)
	}
	rest := string(lines[i][n.Column-1:])
	if strings.Contains(strings.TrimPrefix(rest, n.Value), "#") && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 {
		return nil, fmt.Errorf("values: %s: a trailing comment would be lost", strings.Join(path, "."))
	}
	lines[i] = append(lines[i][:n.Column-1:n.Column-1], strconv.Quote(value)...)
	return bytes.Join(lines, []byte("\n")), nil
}
