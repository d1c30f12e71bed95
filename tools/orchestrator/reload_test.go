package orchestrator

import (
	"strings"
	"testing"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

// A reloaded template (the chart upgraded with new project settings) takes
// effect without a new orchestrator: running pods become stale, the next
// (re)start builds from it. Changes that need a restart are refused and the
// running template kept.
func TestSetTemplateAppliesReloadableChanges(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, stale := e.orch.StateCounts(); stale != 0 {
		t.Fatalf("fresh pod counted stale: %d", stale)
	}
	next := func(edit func(*podtemplate.Template)) *podtemplate.Template {
		tpl := fixture.Template()
		tpl.Storage.ServerPath = e.homes
		edit(tpl)
		return tpl
	}

	if err := e.orch.SetTemplate(next(func(t *podtemplate.Template) { t.Image.Tag = "1.2.4" })); err != nil {
		t.Fatalf("image change refused: %v", err)
	}
	if got := e.orch.Template().Image.Tag; got != "1.2.4" {
		t.Fatalf("template image tag %q after reload", got)
	}
	if _, stale := e.orch.StateCounts(); stale != 1 {
		t.Fatalf("pod of the previous template not counted stale after the reload: %d", stale)
	}
	if _, err := e.orch.Restart(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	if img := e.apiPod(pid.PodName()).Spec.Containers[0].Image; img != "registry.example/cocalc-project:1.2.4" {
		t.Fatalf("restart after reload built image %q", img)
	}
	if _, stale := e.orch.StateCounts(); stale != 0 {
		t.Fatalf("new pod counted stale: %d", stale)
	}

	refused := []struct {
		name  string
		edit  func(*podtemplate.Template)
		field string
	}{
		{"namespace", func(t *podtemplate.Template) { t.Image.Tag = "9"; t.Namespace = "elsewhere" }, "namespace"},
		{"home owner", func(t *podtemplate.Template) { t.Image.Tag = "9"; t.Security.RunAsUser = 3000 }, "security"},
		{"invalid", func(t *podtemplate.Template) { t.Image.Tag = "latest" }, "image.tag"},
	}
	for _, tc := range refused {
		err := e.orch.SetTemplate(next(tc.edit))
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: SetTemplate error %v, want one naming %s", tc.name, err, tc.field)
		}
		if got := e.orch.Template().Image.Tag; got != "1.2.4" {
			t.Errorf("%s: refused template replaced the running one (tag %q)", tc.name, got)
		}
	}
}
