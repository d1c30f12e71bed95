package main

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseOwner(t *testing.T) {
	for _, tc := range []struct {
		in       string
		uid, gid int
		ok       bool
	}{
		{"2001:2001", 2001, 2001, true},
		{"0:5", 0, 5, true},
		{"2001", 0, 0, false},
		{"a:1", 0, 0, false},
		{"1:-1", 0, 0, false},
	} {
		uid, gid, err := parseOwner(tc.in)
		if !tc.ok {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, []int{tc.uid, tc.gid}, []int{uid, gid}, tc.in)
	}
}

func TestChownMain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "homes")
	require.NoError(t, os.Mkdir(dir, 0o755))
	// Owning a file by its current owner works without privileges.
	uid, gid := os.Getuid(), os.Getgid()
	require.Equal(t, 0, chownMain([]string{itoa(uid) + ":" + itoa(gid), dir}))
	st, err := os.Stat(dir)
	require.NoError(t, err)
	require.EqualValues(t, uid, st.Sys().(*syscall.Stat_t).Uid)
	require.Equal(t, 1, chownMain([]string{"1:1", filepath.Join(dir, "missing")}))
	require.Equal(t, 2, chownMain([]string{dir}))
}

func itoa(i int) string { return strconv.Itoa(i) }
