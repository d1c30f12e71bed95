// Command cocalc-k8s is the CoCalc-on-Kubernetes orchestrator: one pod per
// CoCalc project. See "cocalc-k8s --help".
package main

import (
	"context"
	"os"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/cli"
)

func main() {
	os.Exit(cli.Execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
