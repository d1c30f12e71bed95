// Command project is the offline stand-in for the CoCalc project image, for
// the kind test tier (FROM scratch, static). It serves the project's two
// ports (6000, 6001) with:
//
//	GET  /health                  "ok"
//	GET  /file?name=N             the file N of the home directory
//	POST /file?name=N             writes the request body to home/N
//	GET  /dial?addr=H:P[&timeout=2s]
//	                              tries a TCP connection from inside the pod
//	                              (how tests check NetworkPolicy isolation)
//
// At start it writes home/.standin-started, proving the home is writable
// by the project user.
//
// Run as `true` (the image installs it as /bin/true too) it exits 0 at
// once: the chart's image pre-puller runs the project image's `true`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/test/standins/standin"
)

func main() {
	if filepath.Base(os.Args[0]) == "true" {
		os.Exit(0)
	}
	// Not $HOME: runtimes set HOME=/ for an image without /etc/passwd.
	home := flag.String("home", "/home/user", "the project's home directory (where the chart mounts it)")
	ports := flag.String("listen", ":6000,:6001", "comma-separated listen addresses")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *home, strings.Split(*ports, ",")); err != nil {
		slog.Error("project stand-in", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, home string, addrs []string) error {
	marker := filepath.Join(home, ".standin-started")
	if err := os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", marker, err)
	}
	return standin.Serve(ctx, "project", newHandler(home), addrs)
}

// newHandler serves the stand-in's API over home.
func newHandler(home string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		path, err := homeFile(home, r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(data)
	})
	mux.HandleFunc("POST /file", func(w http.ResponseWriter, r *http.Request) {
		path, err := homeFile(home, r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = os.WriteFile(path, data, 0o644)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /dial", standin.Dial)
	return mux
}

// homeFile confines name to a plain file name directly in home.
func homeFile(home, name string) (string, error) {
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return "", fmt.Errorf("name %q: want a plain file name", name)
	}
	return filepath.Join(home, name), nil
}
