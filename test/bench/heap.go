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

// ProfilePodCache builds the orchestrator's pod cache (tools/kube.Client,
// same namespace and selector as the serve process) inside this process,
// measures the live heap it adds, and writes a heap profile to path. It
// explains the serve process's RSS at scale without needing a pprof
// endpoint in the orchestrator.
func ProfilePodCache(ctx context.Context, rc *rest.Config, ns, path string) (string, error) {
	tpl, err := Template(ns, os.TempDir(), 0)
	if err != nil {
		return "", err
	}
	cs, err := clientFor(rc, 1000, 2000, "cocalc-bench-heap")
	if err != nil {
		return "", err
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	kc, err := kube.New(cs, kube.Config{Namespace: ns, Selector: tpl.SelectorLabels, Logger: quiet})
	if err != nil {
		return "", err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kc.Start(cctx)
	if err := kc.WaitForSync(cctx); err != nil {
		return "", fmt.Errorf("heap profile: cache sync: %w", err)
	}
	pods := len(kc.Pods())
	runtime.GC()
	runtime.ReadMemStats(&after)
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("heap profile: %w", err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		return "", fmt.Errorf("heap profile: %w", err)
	}
	live := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	runtime.KeepAlive(kc)
	return fmt.Sprintf("Pod cache heap: the orchestrator's pod cache (tools/kube.Client) of %d project pods holds %.1f MiB of live heap (%.1f KiB per pod) after GC; Go's default GOGC=100 lets the heap grow to about twice the live heap before collecting, which with the runtime's own overhead is the serve process's RSS. Heap profile: %s.",
		pods, live/(1<<20), live/1024/float64(max(pods, 1)), path), nil
}
