package podtemplate_test

import (
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate/reftable"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

func loadImageRows(t *testing.T) []reftable.Row {
	t.Helper()
	rows, err := reftable.Load()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// Every accepted row yields exactly the table's reference, which a real
// reference parser reads back into the same repository, tag and digest; every
// refused row is rejected by Validate naming the field.
func TestImageReferenceTable(t *testing.T) {
	for _, row := range loadImageRows(t) {
		t.Run(row.Name, func(t *testing.T) {
			tpl := fixture.Template()
			tpl.Image.Repository, tpl.Image.Tag, tpl.Image.Digest = row.Repository, row.Tag, row.Digest
			err := tpl.Validate()
			if row.Refused != "" {
				if err == nil || !strings.Contains(err.Error(), row.Refused) {
					t.Fatalf("Validate() = %v, want an error naming %s", err, row.Refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate(): %v", err)
			}
			ref := tpl.Image.Reference()
			if ref != row.Want {
				t.Fatalf("Reference() = %q, want %q", ref, row.Want)
			}
			checkParsedReference(t, ref, row.Repository, row.Tag, row.Digest)
		})
	}
}

// checkParsedReference parses ref with github.com/distribution/reference (the
// grammar container runtimes use) and checks that it splits back into the parts.
func checkParsedReference(t *testing.T, ref, repo, tag, digest string) {
	t.Helper()
	parsed, err := reference.Parse(ref)
	if err != nil {
		t.Fatalf("%q is not a valid reference: %v", ref, err)
	}
	named, ok := parsed.(reference.Named)
	if !ok || named.Name() != repo {
		t.Fatalf("%q: repository %v, want %q", ref, parsed, repo)
	}
	gotTag := ""
	if tagged, ok := parsed.(reference.Tagged); ok {
		gotTag = tagged.Tag()
	}
	gotDigest := ""
	if digested, ok := parsed.(reference.Digested); ok {
		gotDigest = digested.Digest().String()
	}
	if gotTag != tag || gotDigest != digest {
		t.Fatalf("%q parses to tag %q digest %q, want %q %q", ref, gotTag, gotDigest, tag, digest)
	}
}
