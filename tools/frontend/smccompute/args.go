package smccompute

import (
	"fmt"
	"strconv"
	"strings"
)

// The command line follows the original's argparse definition: global flags
// before the action, then the action's options and positionals in any
// order, "--opt value" or "--opt=value", the project IDs last (one or
// more).

type optKind int

const (
	optBool optKind = iota
	optString
	optInt
	optFloat
)

// actionSpec describes one action's command line.
type actionSpec struct {
	opts map[string]optKind
	// pathArg: the first positional is a path (read_file, mkdir).
	pathArg bool
}

var startOpts = map[string]optKind{
	"cores": optFloat, "memory": optInt, "cpu_shares": optInt,
	"network": optInt, "member": optInt, "base_url": optString,
	"ephemeral_state": optBool, "ephemeral_disk": optBool, "extra_env": optString,
}

var actions = map[string]actionSpec{
	"start":   {opts: startOpts},
	"restart": {opts: startOpts},
	"stop":    {opts: map[string]optKind{"ephemeral_state": optBool, "ephemeral_disk": optBool}},
	"status":  {opts: map[string]optKind{"timeout": optInt, "base_url": optString}},
	"state":   {opts: map[string]optKind{"timeout": optInt, "base_url": optString}},
	// save never reached smc_compute in the original (the compute server
	// answered it); it is accepted here as a no-op so callers can.
	"save": {opts: map[string]optKind{}},
	// The original's quota and user actions were no-ops in kubernetes mode
	// but are still called by the compute server (set_all_quotas), so they
	// must keep succeeding.
	"compute_quota": {opts: map[string]optKind{"cores": optFloat, "memory": optFloat, "cpu_shares": optFloat}},
	"disk_quota":    {opts: map[string]optKind{}, pathArg: true},
	"create_user":   {opts: map[string]optKind{"login_shell": optString}},
	"delete_user":   {opts: map[string]optKind{}},
	"killall":       {opts: map[string]optKind{}},
	"directory_listing": {opts: map[string]optKind{
		"path": optString, "hidden": optBool, "time": optBool, "start": optInt, "limit": optInt,
	}},
	"read_file": {opts: map[string]optKind{"maxsize": optInt}, pathArg: true},
	"mkdir":     {opts: map[string]optKind{}, pathArg: true},
	"copy_path": {opts: map[string]optKind{
		"target_hostname": optString, "target_project_id": optString, "path": optString,
		"target_path": optString, "overwrite_newer": optBool, "delete_missing": optBool,
		"exclude_history": optBool, "backup": optBool,
		// Passed by the 2020 compute client but missing from the original's
		// parser (which then failed); accepted and ignored here.
		"bwlimit": optString, "timeout": optInt,
	}},
}

// invocation is a parsed command line.
type invocation struct {
	action     string
	path       string // positional path of read_file/mkdir/disk_quota
	projectIDs []string
	set        map[string]string // options given (bools as "1")
}

func (in invocation) str(name, def string) string {
	if v, ok := in.set[name]; ok {
		return v
	}
	return def
}

func (in invocation) flag(name string) bool { _, ok := in.set[name]; return ok }

func (in invocation) int(name string, def int64) int64 {
	if v, ok := in.set[name]; ok {
		n, _ := strconv.ParseInt(v, 10, 64) // validated by parse
		return n
	}
	return def
}

func (in invocation) float(name string, def float64) float64 {
	if v, ok := in.set[name]; ok {
		f, _ := strconv.ParseFloat(v, 64)
		return f
	}
	return def
}

// usageError is a command line the parser rejects (exit code 2, as argparse).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

var globalBools = map[string]bool{"dev": true, "single": true, "kucalc": true, "kubernetes": true}

func parse(args []string) (invocation, error) {
	var in invocation
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			break
		}
		name, _, hasValue := strings.Cut(a[2:], "=")
		switch {
		case globalBools[name] && !hasValue:
		case name == "projects":
			// The original ignored --projects in kubernetes mode; the
			// homes root comes from the configuration.
			if !hasValue {
				i++
				if i >= len(args) {
					return in, usagef("argument --projects: expected one argument")
				}
			}
		default:
			return in, usagef("unrecognized arguments: %s", a)
		}
	}
	if i >= len(args) {
		return in, usagef("too few arguments: an action is required")
	}
	in.action = args[i]
	spec, ok := actions[in.action]
	if !ok {
		return in, usagef("argument action: invalid choice: '%s'", in.action)
	}
	in.set = map[string]string{}
	var positional []string
	for i++; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") || a == "--" {
			if a == "--" {
				positional = append(positional, args[i+1:]...)
				break
			}
			positional = append(positional, a)
			continue
		}
		name, value, hasValue := strings.Cut(a[2:], "=")
		kind, ok := spec.opts[name]
		if !ok {
			return in, usagef("unrecognized arguments: %s", a)
		}
		if kind == optBool {
			if hasValue {
				return in, usagef("argument --%s: ignored explicit argument '%s'", name, value)
			}
			in.set[name] = "1"
			continue
		}
		if !hasValue {
			i++
			if i >= len(args) {
				return in, usagef("argument --%s: expected one argument", name)
			}
			value = args[i]
		}
		switch kind {
		case optInt:
			if _, err := strconv.ParseInt(value, 10, 64); err != nil {
				return in, usagef("argument --%s: invalid int value: '%s'", name, value)
			}
		case optFloat:
			if _, err := strconv.ParseFloat(value, 64); err != nil {
				return in, usagef("argument --%s: invalid float value: '%s'", name, value)
			}
		}
		in.set[name] = value
	}
	if spec.pathArg {
		if len(positional) == 0 {
			return in, usagef("too few arguments: %s needs a path and a project_id", in.action)
		}
		in.path, positional = positional[0], positional[1:]
	}
	if len(positional) == 0 {
		return in, usagef("too few arguments: project_id is required")
	}
	in.projectIDs = positional
	return in, nil
}
