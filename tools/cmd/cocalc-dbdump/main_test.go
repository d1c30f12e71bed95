package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/dbdump"
)

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serve and fetch as the chart runs them: the token from the environment,
// pg_dump's arguments fixed, the dump on fetch's standard output.
func TestServeAndFetch(t *testing.T) {
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "pg_dump")
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" > "+args+"\nprintf 'PGDMP %s' \"$PGDATABASE\"\n"), 0o755))
	t.Setenv(dbdump.TokenEnv, strings.Repeat("k", dbdump.MinTokenLength))
	t.Setenv("PGDATABASE", "smc")
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", fmt.Sprintf("-listen=127.0.0.1:%d", port), "-pg-dump=" + fake}, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d%s", port, dbdump.DumpPath)
	var out bytes.Buffer
	require.Eventually(t, func() bool {
		out.Reset()
		return run(context.Background(), []string{"fetch", "-url=" + url}, &out, &bytes.Buffer{}) == nil
	}, time.Minute, 50*time.Millisecond)
	assert.Equal(t, "PGDMP smc", out.String())
	got, err := os.ReadFile(args)
	require.NoError(t, err)
	assert.Equal(t, "--format=custom --no-password\n", string(got))
	cancel()
	require.NoError(t, <-served)
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"restore"}, `unknown command "restore"`},
		{[]string{"fetch"}, "-url is required"},
		{[]string{"serve", "-max-duration=0s", "-listen=127.0.0.1:0"}, "must be positive"},
	} {
		err := run(context.Background(), tc.args, &bytes.Buffer{}, &bytes.Buffer{})
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want)
	}
}
