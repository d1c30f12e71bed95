package dbdump

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var token = strings.Repeat("t", MinTokenLength)

// fakeDump writes a stand-in for pg_dump: a shell script with the given
// body that records its pid in <dir>/pid when it starts.
func fakeDump(t *testing.T, body string) (cmd []string, dir string) {
	t.Helper()
	dir = t.TempDir()
	script := filepath.Join(dir, "pg_dump")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho $$ > "+filepath.Join(dir, "pid")+"\n"+body+"\n"), 0o755))
	return []string{script, "--format=custom"}, dir
}

func newTestServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	if cfg.MaxDuration == 0 {
		cfg.MaxDuration = time.Minute
	}
	s, err := NewServer(cfg)
	require.NoError(t, err)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func started(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "pid"))
	return err == nil
}

// pidGone reports whether the process whose pid the fake dump recorded has ended.
func pidGone(t *testing.T, dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return syscall.Kill(pid, 0) != nil
}

func TestFetchCompleteDump(t *testing.T) {
	want := bytes.Repeat([]byte("PGDMP\x00\x01"), 100_000) // 700 KB, many chunks
	data := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.WriteFile(data, want, 0o644))
	cmd, _ := fakeDump(t, "cat "+data)
	ts := newTestServer(t, Config{Token: token, Command: cmd})
	var got bytes.Buffer
	n, err := Fetch(context.Background(), ts.URL+DumpPath, token, &got)
	require.NoError(t, err)
	assert.Equal(t, int64(len(want)), n)
	assert.True(t, bytes.Equal(want, got.Bytes()), "the dump arrives byte for byte")
}

// A pg_dump that fails after writing part of the dump ends the body like a
// complete one; only the trailer tells them apart, and Fetch must fail.
func TestFetchFailsWhenDumpFails(t *testing.T) {
	cmd, _ := fakeDump(t, `printf 'PGDMP partial'; echo 'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused' >&2; exit 1`)
	ts := newTestServer(t, Config{Token: token, Command: cmd})
	var got bytes.Buffer
	n, err := Fetch(context.Background(), ts.URL+DumpPath, token, &got)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exit status 1")
	assert.Contains(t, err.Error(), "Connection refused", "pg_dump's own message reaches the backup log")
	assert.Equal(t, int64(len("PGDMP partial")), n)
}

func TestDumpRefusals(t *testing.T) {
	cmd, dir := fakeDump(t, "printf x")
	for _, tc := range []struct {
		name, serverToken, clientToken, method string
		want                                   int
		wantText                               string
	}{
		{"wrong token", token, strings.Repeat("u", MinTokenLength), http.MethodPost, http.StatusUnauthorized, "bearer token"},
		{"token prefix", token, token[:MinTokenLength-1], http.MethodPost, http.StatusUnauthorized, "bearer token"},
		{"no token sent", token, "", http.MethodPost, http.StatusUnauthorized, "bearer token"},
		{"server has no token", "", "", http.MethodPost, http.StatusServiceUnavailable, TokenEnv + " is empty"},
		{"server token too short", "short", "short", http.MethodPost, http.StatusServiceUnavailable, "shorter than 32"},
		{"GET", token, token, http.MethodGet, http.StatusMethodNotAllowed, "POST only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, Config{Token: tc.serverToken, Command: cmd})
			req, err := http.NewRequest(tc.method, ts.URL+DumpPath, nil)
			require.NoError(t, err)
			if tc.clientToken != "" {
				req.Header.Set("Authorization", "Bearer "+tc.clientToken)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tc.want, resp.StatusCode)
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			assert.Contains(t, body.String(), tc.wantText)
			assert.False(t, started(dir), "nothing is dumped for a refused request")
		})
	}
	t.Run("Fetch reports the refusal", func(t *testing.T) {
		ts := newTestServer(t, Config{Token: "", Command: cmd})
		_, err := Fetch(context.Background(), ts.URL+DumpPath, token, &bytes.Buffer{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "503")
		assert.Contains(t, err.Error(), TokenEnv+" is empty")
	})
	t.Run("Fetch without a token", func(t *testing.T) {
		_, err := Fetch(context.Background(), "http://127.0.0.1:1"+DumpPath, "", &bytes.Buffer{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), TokenEnv)
	})
}

// One dump at a time: a second request while one runs is refused, not
// queued, and does not disturb the first.
func TestOneDumpAtATime(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	cmd, dir := fakeDump(t, "printf first; while [ ! -e "+release+" ]; do sleep 0.05; done; printf done")
	ts := newTestServer(t, Config{Token: token, Command: cmd})
	type result struct {
		body string
		err  error
	}
	first := make(chan result, 1)
	go func() {
		var b bytes.Buffer
		_, err := Fetch(context.Background(), ts.URL+DumpPath, token, &b)
		first <- result{b.String(), err}
	}()
	require.Eventually(t, func() bool { return started(dir) }, time.Minute, 10*time.Millisecond)
	_, err := Fetch(context.Background(), ts.URL+DumpPath, token, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "409")
	assert.Contains(t, err.Error(), "another dump is running")
	require.NoError(t, os.WriteFile(release, nil, 0o644))
	r := <-first
	require.NoError(t, r.err)
	assert.Equal(t, "firstdone", r.body)
	// And the next one runs again.
	_, err = Fetch(context.Background(), ts.URL+DumpPath, token, &bytes.Buffer{})
	require.NoError(t, err)
}

// A client that gives up ends the dump: pg_dump is killed, never left
// running against the database.
func TestClientGoneKillsDump(t *testing.T) {
	cmd, dir := fakeDump(t, "printf partial; exec sleep 600")
	ts := newTestServer(t, Config{Token: token, Command: cmd})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, ts.URL+DumpPath, token, &bytes.Buffer{})
		errc <- err
	}()
	require.Eventually(t, func() bool { return started(dir) }, time.Minute, 10*time.Millisecond)
	cancel()
	require.Error(t, <-errc)
	require.Eventually(t, func() bool { return pidGone(t, dir) }, time.Minute, 20*time.Millisecond, "pg_dump still runs")
}

// A dump longer than MaxDuration is stopped and reported as failed.
func TestMaxDurationStopsDump(t *testing.T) {
	cmd, dir := fakeDump(t, "printf partial; exec sleep 600")
	ts := newTestServer(t, Config{Token: token, Command: cmd, MaxDuration: 300 * time.Millisecond})
	_, err := Fetch(context.Background(), ts.URL+DumpPath, token, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ran longer than 300ms")
	require.Eventually(t, func() bool { return pidGone(t, dir) }, time.Minute, 20*time.Millisecond)
}

// A stream cut before its trailer (the server pod killed mid-dump) is an
// error, whatever the bytes before it were.
func TestFetchCutStream(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", StatusTrailer)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("PGDMP partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer ts.Close()
	_, err := Fetch(context.Background(), ts.URL+DumpPath, token, &bytes.Buffer{})
	require.Error(t, err)

	// A server that ends the body without the trailer (not ours, or older).
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("PGDMP"))
	}))
	defer plain.Close()
	_, err = Fetch(context.Background(), plain.URL+DumpPath, token, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "without a status")
}

func TestHeaderValue(t *testing.T) {
	assert.Equal(t, "failed: a b", headerValue("failed: a\nb\r"))
	assert.Len(t, headerValue(strings.Repeat("x", 5000)), 1024)
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 4}
	_, _ = b.Write([]byte("abc"))
	_, _ = b.Write([]byte("defg"))
	assert.Equal(t, "defg", b.String())
}

// A server that cannot be reached yet (a new pod's NetworkPolicy not yet
// admitted, the server pod starting) is tried again; the dump runs once.
func TestFetchRetriesUntilReachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	runs := filepath.Join(t.TempDir(), "runs")
	cmd, _ := fakeDump(t, "echo run >> "+runs+"; printf PGDMP")
	s, err := NewServer(Config{Token: token, Command: cmd, MaxDuration: time.Minute})
	require.NoError(t, err)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		_ = http.Serve(ln, s.Handler())
	}()
	var got bytes.Buffer
	_, err = Fetch(context.Background(), "http://"+addr+DumpPath, token, &got)
	require.NoError(t, err)
	assert.Equal(t, "PGDMP", got.String())
	n, err := os.ReadFile(runs)
	require.NoError(t, err)
	assert.Equal(t, "run\n", string(n), "pg_dump ran once")

	// Never reachable: the caller's deadline ends it, saying both why and what the last attempt met.
	ctx, cancel := context.WithTimeoutCause(context.Background(), 2*time.Second, errors.New("no dump within the test's 2s"))
	defer cancel()
	_, err = Fetch(ctx, "http://127.0.0.1:1"+DumpPath, token, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no dump within the test's 2s")
	assert.Contains(t, err.Error(), "connection refused")
}
