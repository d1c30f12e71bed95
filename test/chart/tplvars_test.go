package chart

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var (
	tplVarDecl  = regexp.MustCompile(`\$([A-Za-z][A-Za-z0-9_]*)\s*(?:,\s*\$([A-Za-z][A-Za-z0-9_]*)\s*)?:=`)
	tplVarUsage = func(name string) *regexp.Regexp { return regexp.MustCompile(`\$` + name + `\b`) }
)

// Every template variable the chart declares ($x := …, range $k, $v := …) is
// used after its declaration somewhere in the same file: no dead variables.
func TestNoUnusedTemplateVariables(t *testing.T) {
	files := 0
	err := filepath.WalkDir(filepath.Join(chartDir, "templates"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		text := string(data)
		for _, m := range tplVarDecl.FindAllStringSubmatch(text, -1) {
			for _, name := range m[1:] {
				if name == "" {
					continue
				}
				if n := len(tplVarUsage(name).FindAllStringIndex(text, -1)); n < 2 {
					rel, _ := filepath.Rel(chartDir, path)
					t.Errorf("%s: $%s is declared but never used", rel, name)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("only %d template files found", files)
	}
}
