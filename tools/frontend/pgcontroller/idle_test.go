package pgcontroller

import (
	"context"
	"testing"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/testwait"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// TestRefreshedProjectSurvivesItsIdleTimeout: with a 1 s idle timeout, a
// project whose last_edited the hub keeps refreshing (touch_project's
// NOW()) runs for several timeouts, its idle twin is stopped, and the first
// is stopped once the edits stop.
func TestRefreshedProjectSurvivesItsIdleTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	busy, idle := p1, p2
	for _, id := range []string{busy, idle} {
		e.addProject(id)
		if _, err := e.fake.Start(context.Background(), project.ID(id), orchestrator.StartRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	e.exec(`UPDATE projects SET state = '{"state": "running"}', last_started = NOW() - interval '1 hour', last_edited = NOW(),
		run_quota = '{"cpu_limit": 1, "memory_limit": 1000, "idle_timeout": 1}'`)
	cfg := e.config()
	cfg.IdleInterval = 100 * time.Millisecond
	cfg.MinRun = time.Millisecond
	e.start(cfg, e.fake)

	working := time.Now().Add(4 * time.Second)
	for time.Now().Before(working) {
		e.exec(`UPDATE projects SET last_edited = NOW() WHERE project_id = $1`, busy)
		time.Sleep(200 * time.Millisecond)
	}
	if n := e.fake.CountCalls("stop", project.ID(busy)); n != 0 {
		t.Fatalf("a project in use was stopped (%d stops)", n)
	}
	if n := e.fake.CountCalls("stop", project.ID(idle)); n != 1 {
		t.Fatalf("the idle project was stopped %d times within 4 idle timeouts, want 1", n)
	}
	testwait.Eventually(t, "the project stopped after the edits stopped", func() bool { return e.fake.CountCalls("stop", project.ID(busy)) == 1 })
}
