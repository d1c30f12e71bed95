package smccompute

import (
	"context"
	"io"
	"net/http"
	"os"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Environment variables of an installed smc-compute. The 2020 compute server
// passes its own environment on, so they are set on the server container.
const (
	// EnvAPI is the orchestrator's API base URL (cocalc-k8s serve --listen).
	EnvAPI = "COCALC_K8S_API"
	// EnvHomes is the project homes root as mounted in the server container
	// (the original's COCALC_PROJECTS_HOME; kubernetes mode used
	// /projects/home).
	EnvHomes = "COCALC_PROJECTS_HOME"
	// DefaultAPI is serve's default --listen address.
	DefaultAPI = "http://127.0.0.1:8470"
)

// Main is the entry point of the installed program: args without the
// program name, configuration from getenv (os.Getenv). It talks to the
// running orchestrator through its HTTP API, so the process needs no
// Kubernetes credentials, and handles files in-process on the homes volume
// as uid 2001. Wire it as:
//
//	if smccompute.IsInvocation(os.Args[0]) {
//		os.Exit(smccompute.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
//	}
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	api := getenv(EnvAPI)
	if api == "" {
		api = DefaultAPI
	}
	homes := getenv(EnvHomes)
	if homes == "" {
		homes = DefaultHomes
	}
	// As root (the 2020 image), files are handed to the project user; a
	// non-root server can only create files as itself (run it as 2001).
	owner := -1
	if os.Geteuid() == 0 {
		owner = projectfiles.DefaultUID
	}
	client := &httpapi.Client{BaseURL: api, HTTP: &http.Client{}}
	cfg := Config{
		Files:   projectfiles.Store{Dir: homes, UID: owner, GID: owner},
		Connect: func(context.Context) (orchestrator.Projects, error) { return client, nil },
	}
	return Run(ctx, args, stdout, stderr, cfg)
}
