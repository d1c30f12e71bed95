// Command imagebuild builds this repository's images without a container
// daemon, as OCI image layouts, and publishes them with the chart.
//
//	imagebuild orchestrator -out out/images/orchestrator -version X   # cocalc-k8s on an empty base, amd64+arm64
//	imagebuild rootfs -rootfs DIR -out out/images/nfs-server -version X  # a root filesystem as one layer (-config nfs-server|backup)
//	imagebuild inspect -layout out/images/orchestrator [-files]        # JSON: digests, config, sizes, files
//	imagebuild dockerfile -f tools/images/server/Dockerfile            # JSON: the file as BuildKit's parser reads it
//	imagebuild publish -registry HOST[:PORT]/PATH -version X            # push every layout, then the chart
//	imagebuild docker-archive -in image.tar -out DIR [-labels k=v,...]  # a `docker save` archive (one image) as an OCI layout
//
// Every time in an image (file mtimes, config and history created) is
// SOURCE_DATE_EPOCH, so the same inputs give the same digest.
package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		slog.Error("imagebuild", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: imagebuild orchestrator|rootfs|inspect|dockerfile|publish|docker-archive [flags] (see the package comment)")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	var m meta
	metaFlags := func() {
		fs.StringVar(&m.version, "version", "dev", "image version (tag in the layout, label, cocalc-k8s version)")
		fs.StringVar(&m.revision, "revision", "", "source revision (label org.opencontainers.image.revision)")
		fs.StringVar(&m.source, "source", "", "source repository URL (label org.opencontainers.image.source)")
	}
	created := func() error {
		s := os.Getenv("SOURCE_DATE_EPOCH")
		if s == "" {
			return errors.New("SOURCE_DATE_EPOCH is not set (the Makefile sets it to the last commit's time)")
		}
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		m.created = time.Unix(sec, 0).UTC()
		return nil
	}
	switch args[0] {
	case "orchestrator":
		metaFlags()
		out := fs.String("out", "out/images/orchestrator", "OCI layout directory to write (replaced)")
		module := fs.String("module", ".", "Go module root")
		pkg := fs.String("pkg", "./tools/cmd/cocalc-k8s", "package to build")
		platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch[/variant]")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if err := created(); err != nil {
			return err
		}
		var ps []v1.Platform
		for _, s := range strings.Split(*platforms, ",") {
			p, err := parsePlatform(s)
			if err != nil {
				return err
			}
			ps = append(ps, p)
		}
		d, err := buildOrchestrator(ctx, *module, *pkg, *out, ps, m)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, d)
	case "rootfs":
		metaFlags()
		out := fs.String("out", "out/images/nfs-server", "OCI layout directory to write (replaced)")
		rootfs := fs.String("rootfs", "", "root filesystem directory")
		platform := fs.String("platform", "linux/amd64", "the root filesystem's os/arch")
		config := fs.String("config", "nfs-server", "runtime configuration: nfs-server or backup")
		module := fs.String("module", ".", "Go module root (the programs the configuration adds, e.g. backup's cocalc-dbdump)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if err := created(); err != nil {
			return err
		}
		ri, ok := rootfsConfigs[*config]
		if !ok {
			return fmt.Errorf("-config %q: nfs-server or backup", *config)
		}
		p, err := parsePlatform(*platform)
		if err != nil {
			return err
		}
		d, err := buildRootfs(ctx, *rootfs, *module, *out, p, ri, m)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, d)
	case "docker-archive":
		in := fs.String("in", "", "docker save archive of one image")
		out := fs.String("out", "", "OCI layout directory to write")
		labels := fs.String("labels", "", "comma-separated key=value labels added to the image's config")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *in == "" || *out == "" {
			return errors.New("docker-archive: -in and -out are required")
		}
		lm := map[string]string{}
		for _, kv := range splitList(*labels) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("docker-archive: -labels %q: want key=value", kv)
			}
			lm[k] = v
		}
		d, err := layoutFromDockerArchive(*in, *out, lm)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, d)
	case "inspect":
		dir := fs.String("layout", "", "OCI layout directory")
		files := fs.Bool("files", false, "list each image's files")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		rep, err := inspect(*dir, *files)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case "publish":
		registry := fs.String("registry", "", "registry and path, e.g. host:port/group/project (images go to REGISTRY/<name>, the chart to oci://REGISTRY/charts)")
		version := fs.String("version", "", "release version: image tags, chart version and appVersion")
		layouts := fs.String("layouts", "out/images", "directory of OCI layouts (make images)")
		chart := fs.String("chart", "charts/cocalc", "chart directory (read only: a copy is packaged)")
		helm := fs.String("helm", "bin/helm", "helm binary")
		require := fs.String("require", "", "comma-separated images that must be published (a release: orchestrator,nfs-server,server,project)")
		plainHTTP := fs.Bool("plain-http", false, "talk HTTP, not HTTPS, to a registry that is not on loopback (a test cluster's own; loopback always gets HTTP)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *registry == "" || *version == "" {
			return errors.New("publish: -registry and -version are required")
		}
		pushed, chartRef, err := publish(ctx, publishOptions{
			registry: *registry, version: *version, layouts: *layouts, chart: *chart, helm: *helm,
			require: splitList(*require), plainHTTP: *plainHTTP,
		})
		if err != nil {
			return err
		}
		for _, p := range pushed {
			fmt.Fprintf(stdout, "%s:%s@%s\n", p.repository, p.tag, p.digest)
		}
		fmt.Fprintf(stdout, "%s --version %s\n", chartRef, *version)
	case "dockerfile":
		path := fs.String("f", "Dockerfile", "Dockerfile to parse")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		rep, err := parseDockerfile(*path)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}

// report is inspect's output.
type report struct {
	Digest    string           `json:"digest"`
	Tag       string           `json:"tag"`
	Manifests []manifestReport `json:"manifests"`
}

type manifestReport struct {
	Platform string    `json:"platform"`
	Digest   string    `json:"digest"`
	Size     int64     `json:"compressedSize"`
	RawSize  int64     `json:"uncompressedSize"`
	Created  time.Time `json:"created"`
	Config   v1.Config `json:"config"`
	Files    []string  `json:"files,omitempty"`
}

func inspect(dir string, listFiles bool) (*report, error) {
	idx, err := readLayoutIndex(dir)
	if err != nil {
		return nil, err
	}
	d, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	rep := &report{Digest: d.String()}
	if top, err := readTopTag(dir); err == nil {
		rep.Tag = top
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		mr := manifestReport{Platform: desc.Platform.String(), Digest: desc.Digest.String(), Created: cf.Created.Time, Config: cf.Config}
		layers, err := img.Layers()
		if err != nil {
			return nil, err
		}
		for _, l := range layers {
			sz, err := l.Size()
			if err != nil {
				return nil, err
			}
			mr.Size += sz
			rc, err := l.Uncompressed()
			if err != nil {
				return nil, err
			}
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					rc.Close()
					return nil, err
				}
				mr.RawSize += h.Size
				if listFiles {
					mr.Files = append(mr.Files, "/"+strings.TrimSuffix(h.Name, "/"))
				}
			}
			rc.Close()
		}
		rep.Manifests = append(rep.Manifests, mr)
	}
	return rep, nil
}

// readTopTag returns the tag (ref.name annotation) of the layout's entry.
func readTopTag(dir string) (string, error) {
	b, err := os.ReadFile(dir + "/index.json")
	if err != nil {
		return "", err
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(b, &im); err != nil {
		return "", err
	}
	if len(im.Manifests) != 1 {
		return "", errors.New("not one entry")
	}
	return im.Manifests[0].Annotations[annotRefName], nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
