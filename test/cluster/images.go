package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GoImage is a container image made of one static Go binary on an empty
// base (FROM scratch), built locally: the kind tier runs the stand-ins and
// the orchestrator from such images, never from a registry.
type GoImage struct {
	// Ref is the image reference the chart's values name (e.g.
	// cocalc-kubernetes/project-standin:dev).
	Ref string
	// Package is the main package, relative to the repository root.
	Package string
	// Binary is the path of the binary in the image (also the entrypoint).
	Binary string
	// Aliases are extra names for the binary (symlinks are impossible
	// without a shell: hard copies made by COPY).
	Aliases []string
	// User is the numeric uid:gid the image runs as.
	User string
}

// Dockerfile is the image's Dockerfile for a context holding the binary
// as ./bin.
func (g GoImage) Dockerfile() string {
	var b strings.Builder
	b.WriteString("FROM scratch\n")
	fmt.Fprintf(&b, "COPY bin %s\n", g.Binary)
	for _, a := range g.Aliases {
		fmt.Fprintf(&b, "COPY bin %s\n", a)
	}
	fmt.Fprintf(&b, "USER %s\n", g.User)
	fmt.Fprintf(&b, "ENTRYPOINT [%q]\n", g.Binary)
	return b.String()
}

// BuildGoImages builds each image from the repository at root: a static
// `go build` (CGO off, so nothing but the binary is needed) and a `docker
// build` of the generated Dockerfile.
func BuildGoImages(ctx context.Context, root string, images []GoImage, logf func(string, ...any)) error {
	for _, img := range images {
		dir, err := os.MkdirTemp("", "go-image-")
		if err != nil {
			return err
		}
		err = buildGoImage(ctx, root, dir, img)
		os.RemoveAll(dir)
		if err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
		logf("built image %s from %s", img.Ref, img.Package)
	}
	return nil
}

func buildGoImage(ctx context.Context, root, dir string, img GoImage) error {
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "bin"), img.Package)
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v: %s", img.Package, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(img.Dockerfile()), 0o600); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "docker", "build", "-q", "-t", img.Ref, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("docker build: %v: %s", err, out)
	}
	return nil
}
