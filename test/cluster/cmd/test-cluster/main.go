// Command test-cluster runs the test clusters for developers and CI:
//
//	test-cluster up   [-tier api|kind] [-foreground] start one, record it under .cache/cluster/<tier>
//	test-cluster down [-tier api|kind]              stop it
//	test-cluster env  [-tier api|kind]              print `export KUBECONFIG=...`
//	test-cluster status [-tier api|kind]            exit 0 only if the recorded cluster answers
//	test-cluster load-images                        rebuild the kind tier's test images and load them
//
// -tier=kind -nodes=3 -name=cocalc-multi: a kind cluster of a control plane
// and two workers beside the one-node "cocalc" (state in
// .cache/cluster/kind-cocalc-multi; tests attach with COCALC_TEST_TIER=kind
// COCALC_KIND_STATE=.cache/cluster/kind-cocalc-multi). Every kind
// subcommand takes -name.
//
// `up -tier=kind` creates a kind cluster with the kind library from the
// node image ci/kind builds offline (-node-image to use another, e.g.
// kindest/node), applies kube-router for NetworkPolicy enforcement and
// loads the stand-in and orchestrator images built from this repository.
//
// `up` for the api tier starts a supervisor in the background (the control
// plane's processes are its children, it runs the api tier's volume
// provisioner) and returns once the cluster is ready; tests then attach
// with COCALC_TEST_REUSE=1. -foreground keeps the supervisor in the
// terminal until Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	tier := fs.String("tier", string(cluster.TierAPI), "cluster tier: api or kind")
	foreground := fs.Bool("foreground", false, "up: keep running in this terminal until interrupted")
	nodes := fs.Int("nodes", 3, "up: simulated nodes (api tier)")
	timeout := fs.Duration("timeout", 3*time.Minute, "up: how long to wait for the cluster")
	nodeImage := fs.String("node-image", "", "up -tier=kind: node image (default cocalc.local/kind-node:<pinned version>, built by ci/kind)")
	name := fs.String("name", kindName, "-tier=kind: the kind cluster (state in .cache/cluster/kind, or kind-<name> for another name)")
	_ = fs.Parse(os.Args[2:])
	// -nodes counts kind nodes only when given: 1 by default (the
	// one-node tier), n > 1 = a control plane and n-1 workers.
	kindNodes := 1
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "nodes" {
			kindNodes = *nodes
		}
	})
	if cluster.Tier(*tier) == cluster.TierKind || os.Args[1] == "load-images" {
		if err := selectKind(*name); err != nil {
			fmt.Fprintln(os.Stderr, "test-cluster:", err)
			os.Exit(1)
		}
	}

	var err error
	switch os.Args[1] {
	case "up":
		switch cluster.Tier(*tier) {
		case cluster.TierAPI:
		case cluster.TierKind:
			err = upKind(*nodeImage, kindNodes, *timeout+5*time.Minute)
		default:
			err = fmt.Errorf("up -tier=%s: want api or kind", *tier)
		}
		if cluster.Tier(*tier) != cluster.TierAPI {
			break
		}
		if *foreground {
			err = supervise(*nodes, *timeout)
		} else {
			err = upDetached(*nodes, *timeout)
		}
	case "down":
		if cluster.Tier(*tier) == cluster.TierKind {
			err = downKind()
		} else {
			err = down(cluster.Tier(*tier))
		}
	case "status":
		err = status(cluster.Tier(*tier))
	case "load-images":
		err = reloadKindImages(*timeout)
	case "env":
		err = printEnv(cluster.Tier(*tier))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "test-cluster:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: test-cluster up|down|env|status|load-images [-tier api|kind] [-foreground] [-nodes N] [-node-image REF] [-name KIND-CLUSTER]")
	os.Exit(2)
}

// supervise starts the api tier, records it, and keeps it running until
// SIGINT/SIGTERM, then stops it and forgets it.
func supervise(nodes int, timeout time.Duration) error {
	dir, err := cluster.SharedStateDir(cluster.TierAPI)
	if err != nil {
		return err
	}
	if err := refuseIfRunning(cluster.TierAPI, dir); err != nil {
		return err
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	startCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	logf := func(format string, args ...any) { slog.Info(fmt.Sprintf(format, args...)) }
	c, err := cluster.Start(startCtx, cluster.Options{Tier: cluster.TierAPI, Nodes: nodes, StateDir: filepath.Join(dir, "run"), Logf: logf})
	if err != nil {
		return err
	}
	st := cluster.State{
		Tier: cluster.TierAPI, Name: dir, Kubeconfig: c.KubeconfigPath, Pid: os.Getpid(),
		Capabilities: c.Capabilities(), StartedAt: time.Now().UTC(),
	}
	if err := cluster.WriteState(dir, st); err != nil {
		_ = c.Stop(context.Background())
		return err
	}
	fmt.Printf("export KUBECONFIG=%s\n", c.KubeconfigPath)
	<-ctx.Done()
	slog.Info("stopping api tier")
	_ = cluster.RemoveState(dir)
	stopCtx, cancelStop := context.WithTimeout(context.Background(), time.Minute)
	defer cancelStop()
	return c.Stop(stopCtx)
}

func refuseIfRunning(tier cluster.Tier, dir string) error {
	st, err := cluster.ReadState(dir)
	if err != nil {
		return nil
	}
	if st.Pid > 0 && syscall.Kill(st.Pid, 0) == nil {
		return fmt.Errorf("an %s cluster is already running (pid %d); `make down` first, or use it: export KUBECONFIG=%s", tier, st.Pid, st.Kubeconfig)
	}
	return nil
}

// upDetached re-runs this binary with -foreground in a new session, its
// output in the state dir's log, and waits for it to record the cluster.
func upDetached(nodes int, timeout time.Duration) error {
	dir, err := cluster.SharedStateDir(cluster.TierAPI)
	if err != nil {
		return err
	}
	if err := refuseIfRunning(cluster.TierAPI, dir); err != nil {
		return err
	}
	_ = cluster.RemoveState(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "supervisor.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(self, "up", "-foreground", fmt.Sprintf("-nodes=%d", nodes), "-timeout="+timeout.String())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(timeout + 10*time.Second)
	for {
		if st, err := cluster.ReadState(dir); err == nil && st.Pid == cmd.Process.Pid {
			fmt.Printf("api tier running (supervisor pid %d, log %s); stop it with `make down`\n", st.Pid, logPath)
			fmt.Printf("export KUBECONFIG=%s\n", st.Kubeconfig)
			return nil
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("supervisor exited (%v):\n%s", err, out)
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("api tier not ready after %s; see %s", timeout, logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// down stops the recorded cluster's supervisor and waits for it to exit.
func down(tier cluster.Tier) error {
	dir, err := cluster.SharedStateDir(tier)
	if err != nil {
		return err
	}
	st, err := cluster.ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Printf("no %s cluster running\n", tier)
		return nil
	}
	if err != nil {
		return err
	}
	if st.Pid <= 0 {
		return fmt.Errorf("the %s cluster has no supervisor process; stop it with its own tooling (make down)", tier)
	}
	if err := syscall.Kill(st.Pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			fmt.Printf("%s cluster supervisor (pid %d) was already gone\n", tier, st.Pid)
			return cluster.RemoveState(dir)
		}
		return fmt.Errorf("signal supervisor %d: %w", st.Pid, err)
	}
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if syscall.Kill(st.Pid, 0) != nil {
			fmt.Printf("%s cluster stopped\n", tier)
			return cluster.RemoveState(dir)
		}
	}
	return fmt.Errorf("supervisor %d still running after 90s", st.Pid)
}

func printEnv(tier cluster.Tier) error {
	dir, err := cluster.SharedStateDir(tier)
	if err != nil {
		return err
	}
	if tier == cluster.TierKind {
		dir = kindState
	}
	st, err := cluster.ReadState(dir)
	if err != nil {
		return fmt.Errorf("no %s cluster recorded in %s: %w", tier, dir, err)
	}
	fmt.Printf("export KUBECONFIG=%s\n", st.Kubeconfig)
	return nil
}

// status succeeds only when the recorded cluster of tier is up and its
// API server answers.
func status(tier cluster.Tier) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := cluster.Attach(ctx, tier)
	if err != nil {
		return err
	}
	fmt.Printf("%s cluster %s is up (KUBECONFIG=%s)\n", tier, c.Name, c.KubeconfigPath)
	return nil
}
