// Package project is the identity of a CoCalc project: a canonical lowercase
// UUID, and the names derived from it (pod name, home directory name).
//
// Every ID that reaches the Kubernetes API or the file system goes through
// Parse first, so a hostile or sloppy ID ("../x", "{UUID}", upper case) is
// refused before any call is made. Only the canonical form is accepted
// (rather than normalised) because the hub stores IDs in that form and two
// spellings of one project must never map to two pods or two homes.
package project

import (
	"errors"
	"fmt"
	"strings"
)

// PodNamePrefix is prepended to the project ID to form its pod name (as in
// the original cocalc-kubernetes).
const PodNamePrefix = "project-"

// uuidLen is the length of "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
const uuidLen = 36

// ErrInvalidID is wrapped by every error Parse returns.
var ErrInvalidID = errors.New("invalid project id")

// ID is a validated project ID. The zero value is not a valid ID; obtain IDs
// from Parse or FromPodName.
type ID string

// Parse accepts exactly the canonical lowercase textual form of a UUID.
func Parse(s string) (ID, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidID)
	}
	if len(s) != uuidLen {
		return "", fmt.Errorf("%w: %q has %d characters, want %d (canonical lowercase UUID)", ErrInvalidID, truncate(s), len(s), uuidLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", fmt.Errorf("%w: %q: want '-' at position %d", ErrInvalidID, s, i)
			}
		default:
			if !isLowerHex(c) {
				return "", fmt.Errorf("%w: %q: character %q at position %d is not a lowercase hex digit", ErrInvalidID, s, c, i)
			}
		}
	}
	if s == "00000000-0000-0000-0000-000000000000" {
		return "", fmt.Errorf("%w: the nil UUID is not a project", ErrInvalidID)
	}
	return ID(s), nil
}

// MustParse is Parse for constants in tests; it panics on a bad ID.
func MustParse(s string) ID {
	id, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return id
}

// FromPodName returns the project ID of a pod named PodNamePrefix+<uuid>.
func FromPodName(name string) (ID, error) {
	rest, ok := strings.CutPrefix(name, PodNamePrefix)
	if !ok {
		return "", fmt.Errorf("%w: pod name %q lacks prefix %q", ErrInvalidID, truncate(name), PodNamePrefix)
	}
	return Parse(rest)
}

// String returns the canonical form.
func (id ID) String() string { return string(id) }

// PodName is the name of the project's pod: a valid DNS-1123 label
// (8+36 = 44 characters, lowercase alphanumerics and '-').
func (id ID) PodName() string { return PodNamePrefix + string(id) }

// Validate re-checks an ID that may have been built by conversion rather
// than Parse (defence in depth before file-system use).
func (id ID) Validate() error {
	_, err := Parse(string(id))
	return err
}

func isLowerHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f')
}

// truncate keeps error messages bounded for overlong hostile input.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
