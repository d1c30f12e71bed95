package projectfiles

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultExcludes are the paths copy_path never copies (the original's
// _exclude list): caches, trash, the project's private .smc state
// (secret_token) and backups.
var DefaultExcludes = []string{
	".sage/cache", ".sage/temp", ".trash", ".Trash",
	".sagemathcloud", ".smc", ".node-gyp", ".cache", ".forever",
	".snapshots", "*.sage-backup",
}

// HistoryExclude is added by copy_path --exclude_history.
const HistoryExclude = "*.sage-history"

// excludeRule is one rsync --exclude pattern, matched with rsync's rules:
//   - a leading "/" anchors the pattern at the transfer root;
//   - a trailing "/" matches directories only;
//   - a pattern with "/" or "**" is matched against the whole relative path,
//     or any tail of it that starts at a directory boundary;
//   - otherwise it is matched against the final name only;
//   - "*" and "?" do not match "/", "**" does, "[...]" is a class.
type excludeRule struct {
	re       *regexp.Regexp
	anchored bool
	dirOnly  bool
	fullPath bool
}

func compileExclude(p string) (excludeRule, error) {
	var r excludeRule
	orig := p
	if strings.HasSuffix(p, "/") && len(p) > 1 {
		r.dirOnly = true
		p = strings.TrimSuffix(p, "/")
	}
	if strings.HasPrefix(p, "/") {
		r.anchored = true
		p = strings.TrimPrefix(p, "/")
	}
	r.fullPath = r.anchored || strings.Contains(p, "/") || strings.Contains(p, "**")
	re, err := regexp.Compile("^" + globToRegexp(p) + "$")
	if err != nil {
		// Patterns come from copy_paths.exclude, i.e. from users: a bad
		// one fails its copy, never the process.
		return r, fmt.Errorf("invalid exclude pattern %q: %w", orig, err)
	}
	r.re = re
	return r, nil
}

func globToRegexp(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch c {
		case '*':
			if i+1 < len(p) && p[i+1] == '*' {
				b.WriteString(".*")
				i++
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		case '[':
			end := strings.IndexByte(p[i+1:], ']')
			if end < 0 {
				b.WriteString(`\[`)
				continue
			}
			class := p[i+1 : i+1+end]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += end + 1
		case '\\':
			if i+1 < len(p) {
				i++
				b.WriteString(regexp.QuoteMeta(string(p[i])))
			}
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String()
}

func (r excludeRule) match(rel string, isDir bool) bool {
	if r.dirOnly && !isDir {
		return false
	}
	if r.anchored {
		return r.re.MatchString(rel)
	}
	if !r.fullPath {
		return r.re.MatchString(rel[strings.LastIndexByte(rel, '/')+1:])
	}
	for {
		if r.re.MatchString(rel) {
			return true
		}
		i := strings.IndexByte(rel, '/')
		if i < 0 {
			return false
		}
		rel = rel[i+1:]
	}
}

type excludes []excludeRule

func compileExcludes(patterns []string) (excludes, error) {
	out := make(excludes, 0, len(patterns))
	for _, p := range patterns {
		if p == "" {
			continue
		}
		r, err := compileExclude(p)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// match reports whether the path rel (relative to the transfer root, "/"
// separated) is excluded.
func (e excludes) match(rel string, isDir bool) bool {
	for _, r := range e {
		if r.match(rel, isDir) {
			return true
		}
	}
	return false
}
