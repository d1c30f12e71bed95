package podtemplate_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

func TestNeedsRestart(t *testing.T) {
	tests := []struct {
		name string
		edit func(*podtemplate.Template)
		want []string
	}{
		{"image", func(t *podtemplate.Template) { t.Image.Tag = "2.0.0" }, nil},
		{"quota", func(t *podtemplate.Template) { t.Resources.Default.Cores = 3; t.Resources.Max.MemoryMiB = 1 << 14 }, nil},
		{"env and labels", func(t *podtemplate.Template) { t.Labels = map[string]string{"team": "b"} }, nil},
		{"namespace", func(t *podtemplate.Template) { t.Namespace = "other" }, []string{"namespace"}},
		{"selector", func(t *podtemplate.Template) { t.SelectorLabels["x"] = "y" }, []string{"selectorLabels"}},
		{"owner", func(t *podtemplate.Template) { t.Security.RunAsUser = 3000 }, []string{"security"}},
		{"homes", func(t *podtemplate.Template) { t.Storage.MountPath = "/home/u" }, []string{"storage"}},
		{"timeouts", func(t *podtemplate.Template) { t.Timeouts.StartSeconds++ }, []string{"timeouts"}},
		{"default idle", func(t *podtemplate.Template) { t.Resources.Default.IdleTimeoutSeconds++ },
			[]string{"resources.default.idleTimeoutSeconds"}},
	}
	for _, tc := range tests {
		next := fixture.Template()
		tc.edit(next)
		if got := podtemplate.NeedsRestart(fixture.Template(), next); !slices.Equal(got, tc.want) {
			t.Errorf("%s: NeedsRestart = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// configMapDir writes a template the way kubelet updates a ConfigMap
// volume: the content goes into a new timestamped directory and the
// "..data" symlink is swapped to it atomically; the key is a symlink
// through "..data".
type configMapDir struct {
	t   *testing.T
	dir string
	n   int
}

func (c *configMapDir) write(data []byte) {
	c.t.Helper()
	c.n++
	ts := filepath.Join(c.dir, "..ts"+string(rune('a'+c.n)))
	if err := os.Mkdir(ts, 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, podtemplate.TemplateKey), data, 0o644); err != nil {
		c.t.Fatal(err)
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		c.t.Fatal(err)
	}
	key := filepath.Join(c.dir, podtemplate.TemplateKey)
	if _, err := os.Lstat(key); errors.Is(err, os.ErrNotExist) {
		if err := os.Symlink(filepath.Join("..data", podtemplate.TemplateKey), key); err != nil {
			c.t.Fatal(err)
		}
	}
}

func marshal(t *testing.T, tpl *podtemplate.Template) []byte {
	t.Helper()
	data, err := yaml.Marshal(tpl)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type reloadEvent struct {
	result string
	tpl    *podtemplate.Template
}

func TestWatchReloadsChangedTemplate(t *testing.T) {
	cm := &configMapDir{t: t, dir: t.TempDir()}
	first := marshal(t, fixture.Template())
	cm.write(first)
	file := filepath.Join(cm.dir, podtemplate.TemplateKey)
	loaded, data, err := podtemplate.LoadBytes(file)
	if err != nil || loaded.Image.Tag != "1.2.3" {
		t.Fatalf("LoadBytes: %v %v", loaded, err)
	}

	events := make(chan reloadEvent, 10)
	var applied *podtemplate.Template
	var refuse atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		podtemplate.Watch(ctx, podtemplate.WatchConfig{
			File: file, Interval: 5 * time.Millisecond, Loaded: data,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Apply: func(t *podtemplate.Template) error {
				if refuse.Load() {
					return errors.New("needs a restart")
				}
				applied = t
				return nil
			},
			Observe: func(result string) { events <- reloadEvent{result, applied} },
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	next := func(want string) *podtemplate.Template {
		t.Helper()
		select {
		case ev := <-events:
			if ev.result != want {
				t.Fatalf("reload result %q, want %q", ev.result, want)
			}
			return ev.tpl
		case <-time.After(5 * time.Second):
			t.Fatalf("no reload (want %q)", want)
		}
		return nil
	}
	quiet := func() {
		t.Helper()
		select {
		case ev := <-events:
			t.Fatalf("unexpected reload %q", ev.result)
		case <-time.After(50 * time.Millisecond):
		}
	}

	quiet() // the loaded content is not reloaded

	v2 := fixture.Template()
	v2.Image.Tag = "2.0.0"
	cm.write(marshal(t, v2))
	if got := next(podtemplate.ReloadOK); got == nil || got.Image.Tag != "2.0.0" {
		t.Fatalf("applied %+v", got)
	}
	quiet() // the same content is applied once

	cm.write([]byte("version: 1\nimage: {repository: \"\"}\n"))
	if got := next(podtemplate.ReloadInvalid); got.Image.Tag != "2.0.0" {
		t.Fatalf("invalid template replaced the applied one: %q", got.Image.Tag)
	}
	quiet() // logged once, not at every poll

	refuse.Store(true)
	refused := fixture.Template()
	refused.Image.Tag = "2.5.0"
	cm.write(marshal(t, refused))
	if got := next(podtemplate.ReloadRefused); got.Image.Tag != "2.0.0" {
		t.Fatalf("refused template replaced the applied one: %q", got.Image.Tag)
	}
	quiet()

	refuse.Store(false)
	v3 := fixture.Template()
	v3.Image.Tag = "3.0.0"
	cm.write(marshal(t, v3))
	if got := next(podtemplate.ReloadOK); got.Image.Tag != "3.0.0" {
		t.Fatalf("valid template after an invalid one not applied: %q", got.Image.Tag)
	}
}
