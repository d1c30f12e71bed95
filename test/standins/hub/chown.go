package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// chownMain stands in for coreutils' `chown UID:GID PATH...`, which the
// chart's homes-owner init container runs with the server image (the
// stand-in image has no coreutils; the binary is also installed as
// /bin/chown). Only numeric ids, no options: what the chart uses.
func chownMain(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: chown UID:GID PATH...")
		return 2
	}
	uid, gid, err := parseOwner(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "chown:", err)
		return 2
	}
	code := 0
	for _, p := range args[1:] {
		if err := os.Chown(p, uid, gid); err != nil {
			fmt.Fprintln(os.Stderr, "chown:", err)
			code = 1
		}
	}
	return code
}

func parseOwner(s string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("owner %q: want UID:GID", s)
	}
	if uid, err = strconv.Atoi(u); err != nil || uid < 0 {
		return 0, 0, fmt.Errorf("owner %q: bad uid", s)
	}
	if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
		return 0, 0, fmt.Errorf("owner %q: bad gid", s)
	}
	return uid, gid, nil
}
