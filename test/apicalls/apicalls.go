// Package apicalls holds the record of every Kubernetes API call the
// orchestrator's ServiceAccount makes (api-calls.yaml) and turns Role rules
// into the same form. The api-tier test TestRoleIsExactlyWhatTheOrchestratorUses
// (test/e2e) collects the calls from the API server's audit log while it
// drives every operation and checks them against this record (regenerate
// with COCALC_UPDATE_API_CALLS=1); the render tests (test/chart) assert the
// chart's Role grants exactly the recorded set. The Role is thereby derived
// from what the code does, not copied.
package apicalls

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// NFSService stands for the in-cluster NFS server's Service name (it
// depends on the release) in recorded calls.
const NFSService = "$NFS_SERVICE"

// Storage layouts with different calls: nfsServer (project pods mount the
// in-cluster NFS server by its Service's ClusterIP, read at start) and
// every other mode.
const (
	LayoutNFSServer = "nfsServer"
	LayoutOther     = "other"
)

// Grant is one permission in the form "verb resource[/subresource][.group] [name=NAME]".
type Grant struct {
	Group, Resource, Verb, Name string
}

func (g Grant) String() string {
	s := g.Verb + " " + g.Resource
	if g.Group != "" {
		s += "." + g.Group
	}
	if g.Name != "" {
		s += " name=" + g.Name
	}
	return s
}

// Strings returns the grants' String forms, sorted and without duplicates.
func Strings(gs []Grant) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, g := range gs {
		if s := g.String(); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// RoleGrants expands rules into grants (one per group, resource, verb and
// name; a rule without resourceNames grants every name: Name ""). A name
// equal to nfsService is recorded as NFSService.
func RoleGrants(rules []rbacv1.PolicyRule, nfsService string) []Grant {
	var out []Grant
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						if n != "" && n == nfsService {
							n = NFSService
						}
						out = append(out, Grant{Group: g, Resource: res, Verb: v, Name: n})
					}
				}
			}
		}
	}
	return out
}

// Record maps a storage layout to the calls made in it.
type Record map[string][]string

// File is the record's path.
func File() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "api-calls.yaml")
}

const header = `# Every Kubernetes API call (verb resource[/subresource][.group] [name=NAME]) the orchestrator's
# ServiceAccount made while test/e2e TestRoleIsExactlyWhatTheOrchestratorUses
# drove start, stop, restart, idle stop, stale-pod replacement, repeated
# start timeouts and clean-up on the api tier, read from the API server's
# audit log. The chart's Role must grant exactly this (test/chart).
# Regenerate: COCALC_UPDATE_API_CALLS=1 go test ./test/e2e -run TestRoleIsExactlyWhatTheOrchestratorUses
`

// Load reads the record.
func Load() (Record, error) {
	data, err := os.ReadFile(File())
	if err != nil {
		return nil, fmt.Errorf("read API call record: %w", err)
	}
	var r Record
	if err := yaml.UnmarshalStrict(data, &r); err != nil {
		return nil, fmt.Errorf("parse %s: %w", File(), err)
	}
	for _, layout := range []string{LayoutNFSServer, LayoutOther} {
		if len(r[layout]) == 0 {
			return nil, fmt.Errorf("%s: no calls recorded for layout %s", File(), layout)
		}
	}
	return r, nil
}

// Save writes calls for one layout, keeping the others.
func Save(layout string, calls []string) error {
	r, err := Load()
	if err != nil {
		r = Record{}
	}
	r[layout] = calls
	data, err := yaml.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(File(), append([]byte(header), data...), 0o644)
}

// Layout names the layout of a storage mode.
func Layout(nfsServer bool) string {
	if nfsServer {
		return LayoutNFSServer
	}
	return LayoutOther
}

// Describe formats calls one per line, for failure messages.
func Describe(calls []string) string { return "\n  " + strings.Join(calls, "\n  ") }

// Parse reads a Grant from its String form.
func Parse(s string) (Grant, error) {
	f := strings.Fields(s)
	if len(f) < 2 || len(f) > 3 {
		return Grant{}, fmt.Errorf("API call %q: want \"verb resource[/subresource][.group] [name=NAME]\"", s)
	}
	g := Grant{Verb: f[0], Resource: f[1]}
	if i := strings.IndexByte(g.Resource, '.'); i >= 0 {
		g.Resource, g.Group = g.Resource[:i], g.Resource[i+1:]
	}
	if len(f) == 3 {
		name, ok := strings.CutPrefix(f[2], "name=")
		if !ok || name == "" {
			return Grant{}, fmt.Errorf("API call %q: third field must be name=NAME", s)
		}
		g.Name = name
	}
	return g, nil
}
