package podtemplate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"time"
)

// RestartFields are the template fields (JSON paths) a running orchestrator
// cannot take over from a reloaded template: the informer's namespace and
// selector, the home-directory owner and paths, and the timeouts and default
// idle timeout the database front-end reads once at start. A change of any
// of them needs a restart of the server pod; the chart's server Deployment
// carries a checksum of exactly these fields (test/chart keeps both lists
// equal), so such a change restarts it and every other change is reloaded.
var RestartFields = []string{
	"version",
	"release",
	"namespace",
	"selectorLabels",
	"security",
	"storage",
	"timeouts",
	"resources.default.idleTimeoutSeconds",
}

// NeedsRestart returns the RestartFields whose values differ between old
// and next (empty: next can replace old in a running orchestrator).
func NeedsRestart(old, next *Template) []string {
	a, b := asMap(old), asMap(next)
	var changed []string
	for _, f := range RestartFields {
		if !reflect.DeepEqual(dig(a, f), dig(b, f)) {
			changed = append(changed, f)
		}
	}
	return changed
}

func asMap(t *Template) map[string]any {
	data, err := json.Marshal(t)
	if err != nil {
		panic(fmt.Sprintf("podtemplate: marshal template: %v", err)) // plain data: cannot happen
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		panic(fmt.Sprintf("podtemplate: unmarshal template: %v", err))
	}
	return m
}

func dig(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// Reload results reported to WatchConfig.Observe.
const (
	ReloadOK      = "ok"
	ReloadInvalid = "invalid" // the new document does not parse or validate
	ReloadRefused = "refused" // Apply refused it (e.g. NeedsRestart)
)

// WatchConfig configures Watch.
type WatchConfig struct {
	// File is the template file (the mounted ConfigMap key). Kubelet
	// replaces a ConfigMap volume's content by swapping a symlink, so the
	// file is read whole at every poll and compared with the last content.
	File string
	// Interval between reads (default 5s).
	Interval time.Duration
	// Loaded is the content the running template came from (Load's input).
	Loaded []byte
	// Apply installs a parsed and validated template; an error refuses it.
	Apply func(*Template) error
	// Observe, when set, is told the result of each reload attempt.
	Observe func(result string)
	Logger  *slog.Logger
}

// Watch polls the template file until ctx ends. Each new content is
// parsed, validated and handed to Apply; an invalid or refused template is
// logged once and the running one kept (Watch tries again only when the
// content changes once more). A read error (the file briefly missing) is
// retried at the next poll.
func Watch(ctx context.Context, cfg WatchConfig) {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	observe := cfg.Observe
	if observe == nil {
		observe = func(string) {}
	}
	last := cfg.Loaded
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(cfg.File)
		if err != nil {
			log.Debug("project pod template not readable; retrying", "file", cfg.File, "err", err)
			continue
		}
		if bytes.Equal(data, last) {
			continue
		}
		last = data
		next, err := Parse(data)
		if err != nil {
			log.Error("project pod template changed but is invalid; keeping the running one", "file", cfg.File, "err", err)
			observe(ReloadInvalid)
			continue
		}
		if err := cfg.Apply(next); err != nil {
			log.Error("project pod template changed but was not applied; keeping the running one", "file", cfg.File, "err", err)
			observe(ReloadRefused)
			continue
		}
		log.Info("project pod template reloaded", "file", cfg.File)
		observe(ReloadOK)
	}
}

// LoadBytes is Load that also returns the file's content (WatchConfig.Loaded).
func LoadBytes(file string) (*Template, []byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("read project pod template: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("project pod template %s: %w", file, err)
	}
	return t, data, nil
}
