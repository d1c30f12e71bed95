// Command kube-cluster is one binary holding every process of the test
// clusters' control plane: kube-apiserver, kube-controller-manager,
// kube-scheduler, etcd and kwok. One link step instead of five keeps the
// cold build and the disk footprint small; the component is chosen by the
// first argument or, when invoked through a symlink, by argv[0].
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// components maps a component name to its entry point. Each entry point
// receives the arguments after the component name and returns the exit code.
var components = map[string]func(args []string) int{
	"kube-apiserver":          runAPIServer,
	"kube-controller-manager": runControllerManager,
	"kube-scheduler":          runScheduler,
	"etcd":                    runEtcd,
	"kwok":                    runKwok,
	"version":                 runVersion,
}

func main() {
	name, args := dispatch(os.Args)
	run, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: kube-cluster <%s> [flags]\n", strings.Join(names(), "|"))
		os.Exit(2)
	}
	os.Exit(run(args))
}

// dispatch picks the component from argv[0] (symlink) or argv[1].
func dispatch(argv []string) (string, []string) {
	if len(argv) == 0 {
		return "", nil
	}
	if base := filepath.Base(argv[0]); components[base] != nil {
		return base, argv[1:]
	}
	if len(argv) < 2 {
		return "", nil
	}
	return argv[1], argv[2:]
}

func names() []string {
	out := make([]string, 0, len(components))
	for n := range components {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
