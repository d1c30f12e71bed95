// Command cocalc-bench measures project start/stop speed and scale of the
// orchestrator, the original system's method (baseline) and the cluster's
// floor in one run on a fresh api-tier cluster, and prints a Markdown
// table (also written to -out). See test/bench and `make bench`.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/test/bench"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg := bench.Config{}
	var out, scale, coldStart string
	var qps float64
	flag.IntVar(&cfg.Nodes, "nodes", 20, "kwok nodes (each holds about 320 project pods by CPU requests)")
	flag.IntVar(&cfg.Cycles, "cycles", 200, "start+stop cycles per method (0: skip the latency phase)")
	flag.IntVar(&cfg.OriginalLanes, "original-lanes", 2, "baseline cycles run at a time, one per core (its 1 s sleeps would dominate the run time)")
	flag.IntVar(&cfg.Statuses, "statuses", 200, "status queries per method (0: skip)")
	flag.IntVar(&cfg.Burst, "burst", 1000, "starts issued at once")
	flag.StringVar(&scale, "scale", "1000,5000", "project pod counts at which the orchestrator's footprint is measured")
	flag.StringVar(&coldStart, "cold-start", "5000,20000", "project pod counts at which a fresh cocalc-k8s serve's time to ready and memory are measured (pods beyond -scale are created by the harness on held nodes, their status written by it; empty: none)")
	flag.DurationVar(&cfg.Window, "window", 10*time.Second, "footprint sampling window")
	flag.IntVar(&cfg.ChurnWorkers, "churn", 10, "concurrent stop+start loops during a churn window")
	flag.DurationVar(&cfg.ReadyDelay, "ready-delay", 0, "hold every pod this long before kwok makes it Ready (0: the control plane's floor)")
	flag.Float64Var(&qps, "kube-qps", 50, "orchestrator client-go QPS (cocalc-k8s serve --kube-qps default)")
	flag.IntVar(&cfg.QPSBurst, "kube-burst", 100, "orchestrator client-go burst (cocalc-k8s serve --kube-burst default)")
	flag.StringVar(&cfg.Orchestrator, "orchestrator", "bin/cocalc-k8s", "orchestrator binary (make build)")
	flag.StringVar(&cfg.Kubectl, "kubectl", "bin/kubectl-bench", "kubectl binary for the baseline")
	flag.StringVar(&cfg.CompareOrchestrator, "compare-orchestrator", "", "another orchestrator binary (an older build) each cold-start row also starts, for a before/after in one run")
	flag.StringVar(&cfg.KubeBinary, "kube-bin", "", "control-plane binary (default: the cluster package's)")
	flag.StringVar(&out, "out", "test/bench/results/latest.md", "results file (empty: stdout only)")
	flag.StringVar(&cfg.HeapProfile, "heap-profile", "", "write a heap profile of the orchestrator's pod cache at the largest scale here")
	quick := flag.Bool("quick", false, "a few iterations of everything (a smoke run, numbers not meaningful)")
	flag.Parse()
	cfg.QPS = float32(qps)
	if *quick {
		cfg.Nodes, cfg.Cycles, cfg.OriginalLanes, cfg.Statuses, cfg.Burst, cfg.Window, cfg.ChurnWorkers = 3, 10, 2, 10, 100, 2*time.Second, 4
		scale, coldStart = "100,300", "500"
	}
	var err error
	if cfg.Scale, err = counts("scale", scale); err != nil {
		fmt.Fprintf(os.Stderr, "cocalc-bench: %v\n", err)
		return 2
	}
	if cfg.ColdStart, err = counts("cold-start", coldStart); err != nil {
		fmt.Fprintf(os.Stderr, "cocalc-bench: %v\n", err)
		return 2
	}
	for _, p := range []*string{&cfg.Orchestrator, &cfg.Kubectl, &cfg.CompareOrchestrator} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err == nil {
			*p = abs
		}
		if _, err := os.Stat(*p); err != nil {
			fmt.Fprintf(os.Stderr, "cocalc-bench: %v (build it: make bench builds both)\n", err)
			return 2
		}
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cocalc-bench: %v\n", err)
		return 1
	}
	var buf bytes.Buffer
	bench.WriteMarkdown(&buf, res)
	os.Stdout.Write(buf.Bytes())
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "cocalc-bench: %v\n", err)
			return 1
		}
		if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "cocalc-bench: %v\n", err)
			return 1
		}
		files, err := bench.WritePlots(filepath.Dir(out), res)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cocalc-bench: plots: %v\n", err)
			return 1
		}
		for _, f := range files {
			fmt.Fprintf(os.Stderr, "cocalc-bench: wrote %s\n", f)
		}
	}
	return 0
}

// counts parses a comma-separated list of positive integers.
func counts(name, list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		if strings.TrimSpace(s) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-%s %q: want positive integers", name, list)
		}
		out = append(out, n)
	}
	return out, nil
}
