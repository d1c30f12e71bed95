package images

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// An OCI image layout read with the standard library only, from the image
// spec (index.json → image index → manifests → config and layers), so the
// tests check the builder's output against the format, not against the
// builder's own reading of it.

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

type index struct {
	MediaType   string            `json:"mediaType"`
	Manifests   []descriptor      `json:"manifests"`
	Annotations map[string]string `json:"annotations"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
}

type imageConfig struct {
	Created      string `json:"created"`
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Config       struct {
		User         string              `json:"User"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Labels       map[string]string   `json:"Labels"`
	} `json:"config"`
}

type ociLayout struct {
	dir string
	// tag is index.json's org.opencontainers.image.ref.name; digest the
	// image index's.
	tag, digest string
	index       index
}

func (l ociLayout) blob(t *testing.T, digest string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "blobs", strings.Replace(digest, ":", "/", 1)))
	require.NoError(t, err)
	return b
}

func readJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(b, v))
}

func readLayout(t *testing.T, dir string) ociLayout {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	require.NoError(t, err, "an OCI layout has an oci-layout file")
	require.JSONEq(t, `{"imageLayoutVersion":"1.0.0"}`, string(b))
	var top index
	b, err = os.ReadFile(filepath.Join(dir, "index.json"))
	require.NoError(t, err)
	readJSON(t, b, &top)
	require.Len(t, top.Manifests, 1, "one image index per layout")
	l := ociLayout{dir: dir, tag: top.Manifests[0].Annotations["org.opencontainers.image.ref.name"], digest: top.Manifests[0].Digest}
	readJSON(t, l.blob(t, l.digest), &l.index)
	require.Equal(t, "application/vnd.oci.image.index.v1+json", l.index.MediaType)
	return l
}

// platformImage is one platform's manifest, config and files.
type platformImage struct {
	platform string
	manifest manifest
	config   imageConfig
	files    map[string]*tar.Header
	// contents holds the regular files' bytes named by want.
	contents map[string][]byte
}

func (l ociLayout) image(t *testing.T, d descriptor, want ...string) platformImage {
	t.Helper()
	require.NotNil(t, d.Platform, "index entries name their platform")
	p := platformImage{platform: d.Platform.OS + "/" + d.Platform.Architecture, files: map[string]*tar.Header{}, contents: map[string][]byte{}}
	require.Equal(t, "application/vnd.oci.image.manifest.v1+json", d.MediaType)
	readJSON(t, l.blob(t, d.Digest), &p.manifest)
	readJSON(t, l.blob(t, p.manifest.Config.Digest), &p.config)
	for _, ld := range p.manifest.Layers {
		require.Equal(t, "application/vnd.oci.image.layer.v1.tar+gzip", ld.MediaType)
		f, err := os.Open(filepath.Join(l.dir, "blobs", strings.Replace(ld.Digest, ":", "/", 1)))
		require.NoError(t, err)
		zr, err := gzip.NewReader(f)
		require.NoError(t, err)
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			name := "/" + strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
			p.files[name] = h
			for _, w := range want {
				if w == name {
					b, err := io.ReadAll(tr)
					require.NoError(t, err)
					p.contents[name] = b
				}
			}
		}
		f.Close()
	}
	return p
}

// unpack extracts an image's layers into dir (directories, regular files,
// symlinks, hard links; owners kept, device nodes skipped).
func unpack(t *testing.T, l ociLayout, img platformImage, dir string) {
	t.Helper()
	for _, ld := range img.manifest.Layers {
		f, err := os.Open(filepath.Join(l.dir, "blobs", strings.Replace(ld.Digest, ":", "/", 1)))
		require.NoError(t, err)
		zr, err := gzip.NewReader(f)
		require.NoError(t, err)
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			p := filepath.Join(dir, filepath.Clean("/"+h.Name))
			switch h.Typeflag {
			case tar.TypeDir:
				require.NoError(t, os.MkdirAll(p, os.FileMode(h.Mode).Perm()))
			case tar.TypeReg:
				w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
				require.NoError(t, err)
				_, err = io.Copy(w, tr)
				require.NoError(t, err)
				require.NoError(t, w.Close())
			case tar.TypeSymlink:
				require.NoError(t, os.Symlink(h.Linkname, p))
			case tar.TypeLink:
				require.NoError(t, os.Link(filepath.Join(dir, filepath.Clean("/"+h.Linkname)), p))
			default:
				continue
			}
			require.NoError(t, os.Lchown(p, h.Uid, h.Gid))
		}
		f.Close()
	}
}
