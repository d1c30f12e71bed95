// Command promql-names parses PromQL expressions with Prometheus' own parser
// (github.com/prometheus/prometheus/promql/parser, the version pinned in this
// module, the one promtool uses) and prints the metric names each one
// selects. test/chart uses it to check that the chart's alert rules and
// dashboard name only metrics the orchestrator exports.
//
// Input (stdin): a JSON array of expressions. Output (stdout): a JSON array,
// one object per expression, {"expr", "names", "error"}. A selector without
// an exact metric name (only a regular expression on __name__) is an error:
// what it selects cannot be checked.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr  string   `json:"expr"`
	Names []string `json:"names"`
	Error string   `json:"error,omitempty"`
}

func names(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type != labels.MatchEqual {
					bad = fmt.Errorf("selector %s: no exact metric name", vs)
				}
				name = m.Value
			}
		}
		if name == "" {
			bad = fmt.Errorf("selector %s: no metric name", vs)
		}
		set[name] = true
		return nil
	})
	if bad != nil {
		return nil, bad
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql-names: read a JSON array of expressions:", err)
		os.Exit(2)
	}
	res := make([]result, 0, len(exprs))
	for _, e := range exprs {
		r := result{Expr: e}
		n, err := names(e)
		if err != nil {
			r.Error = err.Error()
		}
		r.Names = n
		res = append(res, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "promql-names:", err)
		os.Exit(1)
	}
}
