package main

import (
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestLayoutFromDockerArchive(t *testing.T) {
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, "image.tar")
	tag, _ := name.NewTag("example.test/standin:dev")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "layout")
	got, err := layoutFromDockerArchive(archive, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("digest %s, want the archive's image %s", got, want)
	}
	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != want {
		t.Fatalf("index.json %+v, want one entry %s", im.Manifests, want)
	}
	// Every blob is there: the layout's image reads back whole.
	back, err := lp.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers %d, %v; want 2", len(layers), err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	if _, err := layoutFromDockerArchive(archive, out, nil); err == nil {
		t.Error("an existing layout directory was overwritten")
	}

	// Labels make a new config, so a new image, with the same layers.
	labelled, err := layoutFromDockerArchive(archive, filepath.Join(dir, "labelled"), map[string]string{"test": "yes"})
	if err != nil {
		t.Fatal(err)
	}
	if labelled == want {
		t.Error("labels did not change the image digest")
	}
	lp2, err := layout.FromPath(filepath.Join(dir, "labelled"))
	if err != nil {
		t.Fatal(err)
	}
	img2, err := lp2.Image(labelled)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img2.ConfigFile()
	if err != nil || cf.Config.Labels["test"] != "yes" {
		t.Fatalf("config labels %v, %v", cf.Config.Labels, err)
	}
	l1, _ := img.Layers()
	l2, _ := img2.Layers()
	for i := range l1 {
		d1, _ := l1[i].Digest()
		d2, _ := l2[i].Digest()
		if d1 != d2 {
			t.Errorf("layer %d: %s, want %s", i, d2, d1)
		}
	}
}
