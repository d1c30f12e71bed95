package project

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

const good = "7b3a4b32-8f0e-4c1a-9d2e-0123456789ab"

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"canonical", good, true},
		{"all digits", "12345678-1234-1234-1234-123456789012", true},
		{"empty", "", false},
		{"uppercase", strings.ToUpper(good), false},
		{"one uppercase", "7B3a4b32-8f0e-4c1a-9d2e-0123456789ab", false},
		{"braces", "{" + good + "}", false},
		{"urn", "urn:uuid:" + good, false},
		{"no dashes", strings.ReplaceAll(good, "-", ""), false},
		{"dash moved", "7b3a4b3-28f0e-4c1a-9d2e-0123456789ab", false},
		{"path traversal", "../../../../../../../../etc/passwd1", false},
		{"slash inside", "7b3a4b32-8f0e-4c1a-9d2e-0123456789/b", false},
		{"dot dot same length", "7b3a4b32-8f0e-4c1a-9d2e-0123456789..", false},
		{"nul byte", "7b3a4b32-8f0e-4c1a-9d2e-0123456789a\x00", false},
		{"trailing newline", good + "\n", false},
		{"leading space", " " + good, false},
		{"overlong", good + good, false},
		{"non-hex", "7b3a4b32-8f0e-4c1a-9d2e-0123456789ag", false},
		{"nil uuid", "00000000-0000-0000-0000-000000000000", false},
		{"unicode", "7b3a4b32-8f0e-4c1a-9d2e-0123456789é", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := Parse(tt.in)
			if tt.ok {
				if err != nil {
					t.Fatalf("Parse(%q) = %v, want ok", tt.in, err)
				}
				if id.String() != tt.in {
					t.Fatalf("round trip: got %q", id)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q) accepted %q", tt.in, id)
			}
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("error %v does not wrap ErrInvalidID", err)
			}
		})
	}
}

func TestPodName(t *testing.T) {
	id := MustParse(good)
	if got, want := id.PodName(), "project-"+good; got != want {
		t.Fatalf("PodName = %q, want %q", got, want)
	}
	if errs := validation.IsDNS1123Label(id.PodName()); len(errs) > 0 {
		t.Fatalf("pod name not a DNS label: %v", errs)
	}
	back, err := FromPodName(id.PodName())
	if err != nil || back != id {
		t.Fatalf("FromPodName = %q, %v", back, err)
	}
	for _, bad := range []string{"", good, "server-" + good, "project-", "project-" + strings.ToUpper(good)} {
		if _, err := FromPodName(bad); err == nil {
			t.Errorf("FromPodName(%q) accepted", bad)
		}
	}
}

func TestValidateConvertedID(t *testing.T) {
	if err := ID("../etc").Validate(); err == nil {
		t.Fatal("converted bad ID passed Validate")
	}
	if err := MustParse(good).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestErrorMessageBounded(t *testing.T) {
	_, err := Parse(strings.Repeat("a", 10000))
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("error for overlong input should be bounded, got %d bytes", len(err.Error()))
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{good, "", strings.ToUpper(good), "{" + good + "}", "../" + good, good + "\x00", "00000000-0000-0000-0000-000000000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("error does not wrap ErrInvalidID: %v", err)
			}
			return
		}
		if string(id) != s || len(s) != uuidLen {
			t.Fatalf("accepted non-canonical %q", s)
		}
		if strings.ContainsAny(s, "/\\. \x00{}") || strings.ToLower(s) != s {
			t.Fatalf("accepted dangerous characters: %q", s)
		}
		if errs := validation.IsDNS1123Label(id.PodName()); len(errs) > 0 {
			t.Fatalf("pod name %q invalid: %v", id.PodName(), errs)
		}
		if back, err := FromPodName(id.PodName()); err != nil || back != id {
			t.Fatalf("pod name round trip failed: %q %v", back, err)
		}
	})
}
