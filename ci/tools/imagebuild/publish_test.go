package main

import (
	"strings"
	"testing"
)

func TestLoopbackRegistry(t *testing.T) {
	for registry, want := range map[string]bool{
		"127.0.0.1:5000/cocalc":       true,
		"127.0.0.2/x":                 true,
		"localhost:5000":              true,
		"[::1]:5000/a/b":              true,
		"registry.example:443/cocalc": false,
		"10.0.0.1:5000/cocalc":        false,
		"localhost.example/x":         false,
	} {
		if got := loopbackRegistry(registry); got != want {
			t.Errorf("loopbackRegistry(%q) = %v, want %v", registry, got, want)
		}
	}
}

const values = `# top comment
orchestrator:
  # -- Image.
  image:
    # -- Image repository.
    repository: example/orchestrator
    tag: ""
    digest: ''
other:
  image:
    tag: keep # trailing
`

func TestSetScalarKeepsEverythingElse(t *testing.T) {
	out, err := setScalar([]byte(values), []string{"orchestrator", "image", "repository"}, "127.0.0.1:5000/x/orchestrator")
	if err != nil {
		t.Fatal(err)
	}
	out, err = setScalar(out, []string{"orchestrator", "image", "digest"}, "sha256:abc")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(values, "repository: example/orchestrator", `repository: "127.0.0.1:5000/x/orchestrator"`, 1)
	want = strings.Replace(want, "digest: ''", `digest: "sha256:abc"`, 1)
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

func TestSetScalarRefuses(t *testing.T) {
	for name, path := range map[string][]string{
		"missing key":      {"orchestrator", "image", "pullPolicy"},
		"not a scalar":     {"orchestrator", "image"},
		"trailing comment": {"other", "image", "tag"},
	} {
		if _, err := setScalar([]byte(values), path, "x"); err == nil {
			t.Errorf("%s: setScalar(%v) succeeded", name, path)
		}
	}
}
