package chart

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/gruntwork-io/terratest/modules/k8s"
	"github.com/gruntwork-io/terratest/modules/logger"
)

// update regenerates golden files instead of comparing (make golden).
var update = flag.Bool("update", false, "rewrite testdata/golden from the current chart")

// Fixed release identity for every render, so goldens are stable.
const (
	releaseName      = "cocalc"
	releaseNamespace = "cocalc"
)

var (
	repoRoot  string
	chartDir  string
	helm3Path string
	helm4Path string
	toolsErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The suite mostly waits on helm subprocesses: run more of them at once than
	// GOMAXPROCS (the default) unless -parallel was given.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "8")
	}
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repoRoot = root
	chartDir = filepath.Join(root, "charts", "cocalc")
	helm3Path, toolsErr = findTool(root, "helm")
	if toolsErr == nil {
		helm4Path, toolsErr = findTool(root, "helm4")
	}
	if toolsErr == nil {
		// terratest runs "helm" from PATH: make it the pinned bin/helm.
		os.Setenv("PATH", filepath.Dir(helm3Path)+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	os.Exit(m.Run())
}

func findRepoRoot() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "charts", "cocalc", "Chart.yaml")); err == nil {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("repository root (go.mod next to charts/cocalc) not found above %s", dir)
}

// findTool prefers the pinned build in bin/, then $PATH.
func findTool(root, name string) (string, error) {
	p := filepath.Join(root, "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found in %s nor on $PATH: run `make tools` (builds bin/helm and bin/helm4 from ci/tools/*/go.mod)", name, filepath.Join(root, "bin"))
}

func requireTools(t *testing.T) {
	t.Helper()
	if toolsErr != nil {
		t.Fatal(toolsErr)
	}
}

// valuesCase is one values combination the chart must render.
type valuesCase struct {
	name  string
	files []string // absolute paths
}

// defaultValuesFile holds the one value an install of the defaults (storage
// mode nfsServer with NetworkPolicies) must give: networkPolicy.nfs.nodeCIDRs.
func defaultValuesFile() string {
	return filepath.Join(repoRoot, "test", "chart", "testdata", "default-node-cidrs.yaml")
}

// renderCases are the defaults (with defaultValuesFile), every values/*.yaml and
// every charts/cocalc/ci/*-values.yaml.
func renderCases(t *testing.T) []valuesCase {
	t.Helper()
	cases := []valuesCase{{name: "default", files: []string{defaultValuesFile()}}}
	for _, pattern := range []string{
		filepath.Join(repoRoot, "values", "*.yaml"),
		filepath.Join(chartDir, "ci", "*-values.yaml"),
	} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(files)
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".yaml")
			if strings.Contains(f, string(filepath.Separator)+"ci"+string(filepath.Separator)) {
				name = "ci-" + strings.TrimSuffix(name, "-values")
			}
			cases = append(cases, valuesCase{name: name, files: []string{f}})
		}
	}
	if len(cases) < 4 {
		t.Fatalf("expected defaults plus values/ and ci/ files, found %d cases", len(cases))
	}
	return cases
}

func helmOptions(files []string, set map[string]string) *helm.Options {
	return &helm.Options{
		ValuesFiles:    files,
		SetValues:      set,
		KubectlOptions: k8s.NewKubectlOptions("", "", releaseNamespace),
		Logger:         logger.Discard,
	}
}

// renderE renders the whole chart with helm 3 through terratest; extra are
// more `helm template` arguments (e.g. --api-versions).
func renderE(t *testing.T, files []string, set map[string]string, extra ...string) (string, error) {
	t.Helper()
	requireTools(t)
	return helm.RenderTemplateContextE(t, context.Background(), helmOptions(files, set), chartDir, releaseName, nil, extra...)
}

func render(t *testing.T, files []string, set map[string]string) string {
	t.Helper()
	out, err := renderE(t, files, set)
	if err != nil {
		t.Fatalf("helm template %v %v: %v", files, set, err)
	}
	return out
}

// cachedRender renders each values case once per test binary (many tests read the same output).
var renderCache sync.Map // name -> *cachedOutput

type cachedOutput struct {
	once sync.Once
	out  string
	err  error
}

func renderCase(t *testing.T, c valuesCase) string {
	t.Helper()
	v, _ := renderCache.LoadOrStore(c.name, &cachedOutput{})
	co := v.(*cachedOutput)
	co.once.Do(func() { co.out, co.err = renderE(t, c.files, nil) })
	if co.err != nil {
		t.Fatalf("render %s: %v", c.name, co.err)
	}
	return co.out
}

// platformCases are the defaults and values/*.yaml: what admins install. The
// costlier whole-chart checks (lint, install dry-run, goldens) run on these;
// the ci/ files get the render, decode, security and policy checks.
func platformCases(t *testing.T) []valuesCase {
	t.Helper()
	var res []valuesCase
	for _, c := range renderCases(t) {
		if !strings.HasPrefix(c.name, "ci-") {
			res = append(res, c)
		}
	}
	return res
}

func caseByName(t *testing.T, name string) valuesCase {
	t.Helper()
	for _, c := range renderCases(t) {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no values case %q", name)
	return valuesCase{}
}

// runHelm runs a helm binary directly (helm 4, lint) and returns stdout and a combined error.
func runHelm(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return stdout.String(), fmt.Errorf("%s %s: %w: %s%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String(), stdout.String())
		}
		return stdout.String(), fmt.Errorf("%s: %w", bin, err)
	}
	return stdout.String(), nil
}

func helm4Template(ctx context.Context, files []string) (string, error) {
	args := []string{"template", releaseName, chartDir, "--namespace", releaseNamespace}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	return runHelm(ctx, helm4Path, args...)
}
