package chartdoc

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const schema = `{
  "properties": {
    "image": {"$ref": "#/$defs/image"},
    "plain": {"description": "From the schema."},
    "both": {"description": "Schema text loses."}
  },
  "$defs": {
    "image": {"description": "An image.", "properties": {"tag": {"description": "The tag."}}}
  }
}`

func TestRows(t *testing.T) {
	values := `# file header

# -- Preferred over
# the schema, continued.
both: 1
plain: "a|b"
# -- With comments inside: expanded.
image:
  tag: v1
  # -- The repository.
  repository: r
# -- Uncommented keys inside: one row.
resources:
  limits:
    cpu: 1
list: [1, 2] # -- A list.
`
	rows, err := Rows([]byte(values), []byte(schema))
	require.NoError(t, err)
	assert.Equal(t, []Row{
		{Key: "both", Type: "int", Default: "1", Description: "Preferred over the schema, continued."},
		{Key: "plain", Type: "string", Default: `"a|b"`, Description: "From the schema."},
		{Key: "image", Type: "object", Description: "With comments inside: expanded.", Section: true},
		{Key: "image.tag", Type: "string", Default: `"v1"`, Description: "The tag."}, // through $ref
		{Key: "image.repository", Type: "string", Default: `"r"`, Description: "The repository."},
		{Key: "resources", Type: "object", Default: `{"limits":{"cpu":1}}`, Description: "Uncommented keys inside: one row."},
		{Key: "list", Type: "list", Default: "[1,2]", Description: "A list."},
	}, rows)
}

func TestRowsRefuseUndescribedKeys(t *testing.T) {
	_, err := Rows([]byte("# a plain comment is not a description\nundocumented: 1\nplain: 2\n"), []byte(schema))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "undocumented")
	assert.NotContains(t, err.Error(), "plain")
}

func TestRender(t *testing.T) {
	chart := "name: demo\ndescription: >-\n  A demo\n  chart.\nversion: 1.2.3\nappVersion: \"4.5\"\n"
	values := "# -- Top <name> `a<b>` x.\nplain: \"a|b\"\n# -- Section.\nimage:\n  # -- The tag.\n  tag: v1\n# -- After a section.\nboth: 1\n"
	out, err := Render([]byte(chart), []byte(values), []byte(schema))
	require.NoError(t, err)
	s := string(out)
	assert.Contains(t, s, "# demo\n")
	assert.Contains(t, s, "A demo chart.")
	assert.Contains(t, s, "version 1.2.3, app version 4.5")
	// "<" escaped in prose, not in code spans; "|" escaped everywhere in cells.
	assert.Contains(t, s, "| `plain` | string | `\"a\\|b\"` | Top &lt;name> `a<b>` x. |\n")
	assert.Contains(t, s, "\n### image\n\nSection.\n\n| Key |")
	assert.Contains(t, s, "| `image.tag` | string | `\"v1\"` | The tag. |\n")
	// A top-level scalar after a section is not listed in that section's table.
	assert.Contains(t, s, "\n### both\n\n| Key |")
	assert.Less(t, strings.Index(s, "image.tag"), strings.Index(s, "### both"))
}
