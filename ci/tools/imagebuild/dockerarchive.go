package main

import (
	"fmt"
	"maps"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// layoutFromDockerArchive writes the one image of a `docker save` archive
// (either format: Docker's manifest.json, which every version writes) as
// an OCI layout in dir, a new directory, and returns the image's digest.
// Older daemons (before 25) write no OCI layout themselves; the test tiers
// publish their docker-built stand-in images this way.
//
// labels are added to the image's config (a new config, so a new image
// ID: a test can publish a copy of an image the nodes already hold under
// another name without the two sharing one runtime record).
func layoutFromDockerArchive(archive, dir string, labels map[string]string) (v1.Hash, error) {
	img, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("docker archive %s (one image): %w", archive, err)
	}
	if len(labels) > 0 {
		cf, err := img.ConfigFile()
		if err != nil {
			return v1.Hash{}, fmt.Errorf("docker archive %s: %w", archive, err)
		}
		cfg := cf.Config.DeepCopy()
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		maps.Copy(cfg.Labels, labels)
		if img, err = mutate.Config(img, *cfg); err != nil {
			return v1.Hash{}, err
		}
	}
	if _, err := os.Stat(dir); err == nil {
		return v1.Hash{}, fmt.Errorf("layout %s exists", dir)
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	if err := lp.AppendImage(img); err != nil {
		return v1.Hash{}, fmt.Errorf("layout %s: %w", dir, err)
	}
	return img.Digest()
}
