package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"

	"k8s.io/client-go/rest"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/kube"
)

// PodCacheHeap is the live heap the orchestrator's pod cache holds.
type PodCacheHeap struct {
	Pods      int
	LiveBytes float64
	// Profile is the heap profile written, if any.
	Profile string
}

// PerPod is the live heap per cached pod in bytes.
func (h PodCacheHeap) PerPod() float64 { return h.LiveBytes / float64(max(h.Pods, 1)) }

// Note is the results file's sentence about h.
func (h PodCacheHeap) Note() string {
	s := fmt.Sprintf("Pod cache heap: the orchestrator's pod cache (tools/kube.Client) of %d project pods holds %.1f MiB of live heap (%.2f KiB per pod) after GC; Go's default GOGC=100 lets the heap grow to about twice the live heap before collecting, which with the runtime's own overhead is the serve process's RSS.",
		h.Pods, h.LiveBytes/(1<<20), h.PerPod()/1024)
	if h.Profile != "" {
		s += " Heap profile: " + h.Profile + "."
	}
	return s
}

// ProfilePodCache builds the orchestrator's pod cache (tools/kube.Client,
// same namespace and selector as the serve process) inside this process
// and measures the live heap it adds; with path set it also writes a heap
// profile there. It explains the serve process's RSS at scale without
// needing a pprof endpoint in the orchestrator.
func ProfilePodCache(ctx context.Context, rc *rest.Config, ns, path string) (PodCacheHeap, error) {
	var res PodCacheHeap
	tpl, err := Template(ns, os.TempDir(), 0)
	if err != nil {
		return res, err
	}
	cs, err := clientFor(rc, 1000, 2000, "cocalc-bench-heap")
	if err != nil {
		return res, err
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	kc, err := kube.New(cs, kube.Config{Namespace: ns, Selector: tpl.SelectorLabels, Logger: quiet})
	if err != nil {
		return res, err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kc.Start(cctx)
	if err := kc.WaitForSync(cctx); err != nil {
		return res, fmt.Errorf("heap profile: cache sync: %w", err)
	}
	res.Pods = len(kc.Pods())
	runtime.GC()
	runtime.ReadMemStats(&after)
	res.LiveBytes = float64(after.HeapAlloc) - float64(before.HeapAlloc)
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return res, fmt.Errorf("heap profile: %w", err)
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return res, fmt.Errorf("heap profile: %w", err)
		}
		res.Profile = path
	}
	runtime.KeepAlive(kc)
	return res, nil
}
