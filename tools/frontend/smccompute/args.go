package smccompute

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
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
		// bwlimit is passed by the 2020 compute client when a copy sets one,
		// but was missing from the original's parser (which then failed);
		// timeout is never passed (the client's copy timeout bounds its own
		// wait), but the original's copy_path took it. Both are accepted and
		// ignored.
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

// decodeExtraEnv decodes --extra_env, which the 2020 compute client builds
// as base64 of JSON.stringify(projects.env) (get_project_extra_env; a NULL
// column becomes {}). The 2020 settings UI saves what the user typed, parsed
// leniently, so a value may be a number or a boolean (stringified here, as
// the UI displays them), an empty string (the UI's "delete this variable"),
// null, or an object. The original's project skipped everything but
// non-empty strings and still started; here skipped entries, names that are
// not valid environment variable names, and an undecodable value are logged
// and never fail the start.
func decodeExtraEnv(s string, log *slog.Logger) map[string]string {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		log.Warn("--extra_env is not base64; starting without the project's extra environment", "err", err)
		return nil
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(raw, &env); err != nil {
		log.Warn("--extra_env is not a JSON object; starting without the project's extra environment", "err", err)
		return nil
	}
	out := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v, ok := envValue(env[k])
		switch {
		case !ok:
			log.Warn("--extra_env: skipping a variable whose value is not a string, number or boolean", "name", k, "value", string(env[k]))
		case v == "":
			log.Info("--extra_env: skipping an empty variable (deleted in the project settings)", "name", k)
		case k == podspec.EnvProjectID:
			log.Warn("--extra_env: skipping a variable the orchestrator sets", "name", k)
		case len(validation.IsEnvVarName(k)) > 0:
			log.Warn("--extra_env: skipping an invalid variable name", "name", k, "why", strings.Join(validation.IsEnvVarName(k), "; "))
		default:
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// envValue renders a JSON value of projects.env as the variable's value:
// strings as they are, numbers in their JSON spelling (what the 2020 UI
// showed for them), booleans as true/false. null, objects and arrays have no
// value (ok false); null is reported as empty, like a deleted variable.
func envValue(raw json.RawMessage) (string, bool) {
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", false
	}
	switch v := v.(type) {
	case nil:
		return "", true
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}
