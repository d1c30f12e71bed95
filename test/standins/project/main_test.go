package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/test/standins/standin"
)

func TestHandler(t *testing.T) {
	home := t.TempDir()
	srv := httptest.NewServer(newHandler(home))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := get("/health")
	require.Equal(t, 200, code)
	require.Equal(t, "ok", body)

	resp, err := http.Post(srv.URL+"/file?name=hello.txt", "text/plain", strings.NewReader("hi"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	data, err := os.ReadFile(filepath.Join(home, "hello.txt"))
	require.NoError(t, err)
	require.Equal(t, "hi", string(data))
	code, body = get("/file?name=hello.txt")
	require.Equal(t, 200, code)
	require.Equal(t, "hi", body)
	code, _ = get("/file?name=missing")
	require.Equal(t, 404, code)
	for _, bad := range []string{"../etc/passwd", "a/b", "..", ""} {
		code, _ = get("/file?name=" + bad)
		require.Equal(t, 400, code, bad)
	}

	// Dial: a loopback listener connects, a closed port does not.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	open := ln.Addr().String()
	closedLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := closedLn.Addr().String()
	closedLn.Close()
	defer ln.Close()
	for addr, want := range map[string]bool{open: true, closed: false} {
		code, body = get("/dial?timeout=1s&addr=" + addr)
		require.Equal(t, 200, code)
		var r standin.DialResult
		require.NoError(t, json.Unmarshal([]byte(body), &r))
		require.Equal(t, want, r.Connected, "%s: %+v", addr, r)
	}
	code, _ = get("/dial?addr=nohostport")
	require.Equal(t, 400, code)
}

func TestRunWritesMarkerAndServes(t *testing.T) {
	home := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, home, []string{addr}) }()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 10*time.Second, 20*time.Millisecond)
	_, err = os.Stat(filepath.Join(home, ".standin-started"))
	require.NoError(t, err)
	cancel()
	require.NoError(t, <-done)
}
