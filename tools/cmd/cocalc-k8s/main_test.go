package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestDispatchOnProgramName(t *testing.T) {
	noEnv := func(string) string { return "" }
	tests := []struct {
		argv0 string
		want  string // a line only that program's help prints
	}{
		{"/usr/local/bin/smc-compute", "smc-compute"},
		{"/cocalc-k8s", "serve"},
		{"cocalc-k8s", "serve"},
	}
	for _, tt := range tests {
		t.Run(tt.argv0, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(t.Context(), []string{tt.argv0, "--help"}, &out, &errOut, noEnv)
			if code != 0 {
				t.Fatalf("exit %d, stderr: %s", code, errOut.String())
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Fatalf("help of %s does not mention %q:\n%s", tt.argv0, tt.want, out.String())
			}
		})
	}
	var out, errOut bytes.Buffer
	run(t.Context(), []string{"smc-compute", "--help"}, &out, &errOut, noEnv)
	if strings.Contains(out.String(), "Run the orchestrator") {
		t.Fatal("smc-compute printed the orchestrator's help")
	}
}
