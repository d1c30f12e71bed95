// Command cocalc-k8s is the CoCalc-on-Kubernetes orchestrator: one pod per
// CoCalc project. See "cocalc-k8s --help".
//
// Installed (or linked) under the name smc-compute it is instead the drop-in
// replacement of the 2020 hub's "smc-compute --kubernetes" program, which
// drives projects through this orchestrator's HTTP API.
package main

import (
	"context"
	"io"
	"os"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/cli"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/smccompute"
)

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdout, os.Stderr, os.Getenv))
}

// run dispatches on the program name (argv[0]).
func run(ctx context.Context, argv []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if smccompute.IsInvocation(argv[0]) {
		return smccompute.Main(ctx, argv[1:], stdout, stderr, getenv)
	}
	return cli.Execute(ctx, argv[1:], stdout, stderr)
}
