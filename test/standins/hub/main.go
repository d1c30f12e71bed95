// Command hub is the offline stand-in for the CoCalc server (hub) image, for
// the kind test tier (FROM scratch, static). In the server pod it sits next
// to the orchestrator sidecar and reaches it on loopback, as the real hub
// does. It serves, on each --listen address:
//
//	GET  /health                          "ok"
//	POST /projects/{id}/start             start through the orchestrator (JSON status);
//	                                      the optional JSON body is the start request (quota, env)
//	POST /projects/{id}/stop              stop through the orchestrator
//	GET  /projects/{id}/status            the orchestrator's status
//	     /projects/{id}/raw/{path...}     reverse proxy to the project's raw port (6001)
//	     /projects/{id}/hub/{path...}     reverse proxy to the project's hub port (6000)
//	POST /projects/{id}/file?name=N       writes the body to <homes>/<id>/N (shared storage)
//	GET  /dial?addr=H:P                   a TCP connection from the server pod
//
// Run as `chown` (the image installs it as /bin/chown too) it changes a
// path's owner, for the chart's homes-owner init container.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/test/standins/standin"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

func main() {
	if filepath.Base(os.Args[0]) == "chown" {
		os.Exit(chownMain(os.Args[1:]))
	}
	listen := flag.String("listen", ":8080,:8443", "comma-separated listen addresses (the chart's http and https ports)")
	api := flag.String("orchestrator", envOr("COCALC_K8S_API", "http://127.0.0.1:8470"), "the orchestrator's project API (the chart sets COCALC_K8S_API)")
	homes := flag.String("homes", envOr("COCALC_PROJECTS_HOME", "/projects/home"), "project homes as mounted in the server pod (the chart sets COCALC_PROJECTS_HOME)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	h := newHandler(&httpapi.Client{BaseURL: *api, HTTP: &http.Client{Timeout: 5 * time.Minute}}, *homes)
	if err := standin.Serve(ctx, "hub", h, strings.Split(*listen, ",")); err != nil {
		slog.Error("hub stand-in", "err", err)
		os.Exit(1)
	}
}

// projects is the part of the orchestrator's API client the hub uses.
type projects interface {
	Start(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error)
	Stop(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error)
	Status(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error)
}

func newHandler(api projects, homes string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	withID := func(f func(http.ResponseWriter, *http.Request, project.ID)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id, err := project.Parse(r.PathValue("id"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			f(w, r, id)
		}
	}
	reply := func(w http.ResponseWriter, st orchestrator.ProjectStatus, err error) {
		if err != nil {
			code := http.StatusBadGateway
			var apiErr *httpapi.Error
			if errors.As(err, &apiErr) {
				code = apiErr.StatusCode
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	}
	mux.HandleFunc("POST /projects/{id}/start", withID(func(w http.ResponseWriter, r *http.Request, id project.ID) {
		// The body, if any, is the start request (quota, env) as the
		// orchestrator's API takes it; empty means the template defaults.
		var req orchestrator.StartRequest
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err == nil && len(strings.TrimSpace(string(body))) > 0 {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			http.Error(w, "start request: "+err.Error(), http.StatusBadRequest)
			return
		}
		st, err := api.Start(r.Context(), id, req)
		reply(w, st, err)
	}))
	mux.HandleFunc("POST /projects/{id}/stop", withID(func(w http.ResponseWriter, r *http.Request, id project.ID) {
		st, err := api.Stop(r.Context(), id)
		reply(w, st, err)
	}))
	mux.HandleFunc("GET /projects/{id}/status", withID(func(w http.ResponseWriter, r *http.Request, id project.ID) {
		st, err := api.Status(r.Context(), id)
		reply(w, st, err)
	}))
	proxy := func(port func(orchestrator.ProjectStatus) int) func(http.ResponseWriter, *http.Request, project.ID) {
		return func(w http.ResponseWriter, r *http.Request, id project.ID) {
			st, err := api.Status(r.Context(), id)
			if err != nil {
				reply(w, st, err)
				return
			}
			if st.IP == "" {
				http.Error(w, fmt.Sprintf("project %s is %s, not running", id, st.State), http.StatusServiceUnavailable)
				return
			}
			target := &url.URL{Scheme: "http", Host: net.JoinHostPort(st.IP, strconv.Itoa(port(st)))}
			rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.URL.Path = "/" + pr.In.PathValue("path")
				pr.Out.URL.RawPath = ""
			}}
			rp.ServeHTTP(w, r)
		}
	}
	mux.HandleFunc("/projects/{id}/raw/{path...}", withID(proxy(func(s orchestrator.ProjectStatus) int { return s.RawPort })))
	mux.HandleFunc("/projects/{id}/hub/{path...}", withID(proxy(func(s orchestrator.ProjectStatus) int { return s.HubPort })))
	mux.HandleFunc("POST /projects/{id}/file", withID(func(w http.ResponseWriter, r *http.Request, id project.ID) {
		name := r.URL.Query().Get("name")
		if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
			http.Error(w, fmt.Sprintf("name %q: want a plain file name", name), http.StatusBadRequest)
			return
		}
		data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			// The orchestrator made the home before the pod started.
			err = os.WriteFile(filepath.Join(homes, string(id), name), data, 0o644)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("GET /dial", standin.Dial)
	return mux
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
