// Package standin holds what the offline stand-in images (test/standins/hub
// and test/standins/project) share: serving one handler on several ports
// and the /dial endpoint tests use to probe NetworkPolicies from inside a pod.
package standin

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Serve serves h on every address until ctx ends (then shuts down within
// 5 s and returns nil) or a listener fails (then returns its error).
func Serve(ctx context.Context, name string, h http.Handler, addrs []string) error {
	errs := make(chan error, len(addrs))
	var servers []*http.Server
	for _, a := range addrs {
		s := &http.Server{Addr: a, Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() { errs <- s.ListenAndServe() }()
	}
	slog.Info(name+" stand-in serving", "addrs", addrs)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shutdown)
	}
	return err
}

// DialResult says whether a TCP connection from the pod succeeded.
type DialResult struct {
	Addr      string `json:"addr"`
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
}

// Dial serves GET /dial?addr=H:P[&timeout=2s]: one TCP connection attempt
// from this pod, answered as a DialResult.
func Dial(w http.ResponseWriter, r *http.Request) {
	addr := r.URL.Query().Get("addr")
	timeout := 2 * time.Second
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > time.Minute {
			http.Error(w, "timeout: want a duration in (0, 1m]", http.StatusBadRequest)
			return
		}
		timeout = d
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		http.Error(w, "addr: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res := DialResult{Addr: addr}
	var d net.Dialer
	if conn, err := d.DialContext(ctx, "tcp", addr); err != nil {
		res.Error = err.Error()
	} else {
		conn.Close()
		res.Connected = true
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}
