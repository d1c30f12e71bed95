package orchestrated

import (
	"context"
	"errors"
	"testing"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hubcontrol"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

const id = "11111111-1111-4111-8111-111111111111"

type fakeCore struct {
	startReq orchestrator.StartRequest
	startSt  state.State
	startErr error
	stopped  bool
	touched  bool
	list     []orchestrator.ProjectStatus
}

func (f *fakeCore) Start(ctx context.Context, pid project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	f.startReq = req
	return orchestrator.ProjectStatus{ProjectID: pid, Status: state.Status{State: f.startSt, IP: "10.1.2.3"}}, f.startErr
}

func (f *fakeCore) Stop(ctx context.Context, pid project.ID) (orchestrator.ProjectStatus, error) {
	f.stopped = true
	return orchestrator.ProjectStatus{ProjectID: pid, Status: state.Status{State: state.Opened}}, nil
}

func (f *fakeCore) Status(_ context.Context, pid project.ID) (orchestrator.ProjectStatus, error) {
	return orchestrator.ProjectStatus{ProjectID: pid, Status: state.Status{State: state.Starting, Reason: "ImagePullBackOff"}}, nil
}

func (f *fakeCore) List(context.Context) ([]orchestrator.ProjectStatus, error) { return f.list, nil }

func (f *fakeCore) Touch(_ context.Context, pid project.ID) error { f.touched = true; return nil }

func TestAdapter(t *testing.T) {
	ctx := context.Background()
	core := &fakeCore{startSt: state.Running}
	a := Adapter{Core: core, PollInterval: time.Millisecond}

	q := podtemplate.Quota{Cores: 2, MemoryMiB: 2048, Network: true}
	if err := a.Start(ctx, id, q, hubcontrol.StartOptions{ExtraEnv: map[string]string{"A": "1"}, EphemeralDisk: true}); err != nil {
		t.Fatal(err)
	}
	if core.startReq.Quota != q || core.startReq.Env["A"] != "1" || core.startReq.Env["COCALC_EPHEMERAL_DISK"] != "yes" || len(core.startReq.Env) != 2 {
		t.Errorf("start request %+v", core.startReq)
	}
	if err := a.Start(ctx, id, q, hubcontrol.StartOptions{}); err != nil || core.startReq.Env != nil {
		t.Errorf("no env must stay nil: %v %+v", err, core.startReq)
	}
	core.startSt = state.Starting
	if err := a.Start(ctx, id, q, hubcontrol.StartOptions{}); err == nil {
		t.Error("a start that did not reach running must be an error")
	}
	core.startErr = errors.New("quota too big")
	if err := a.Start(ctx, id, q, hubcontrol.StartOptions{}); err == nil {
		t.Error("core error swallowed")
	}
	if err := a.Start(ctx, "not-an-id", q, hubcontrol.StartOptions{}); err == nil {
		t.Error("bad id accepted")
	}

	if err := a.Stop(ctx, id); err != nil || !core.stopped {
		t.Errorf("stop: %v", err)
	}
	if err := a.Touch(ctx, id); err != nil || !core.touched {
		t.Errorf("touch: %v", err)
	}
	st, err := a.Status(ctx, id)
	if err != nil || st.State != hubcontrol.Starting || st.Error != "ImagePullBackOff" || st.ProjectID != id {
		t.Errorf("status %+v %v", st, err)
	}

	// The container's start time reaches the front-ends (status.start_ts).
	started := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	core.list = []orchestrator.ProjectStatus{{ProjectID: project.MustParse(id), Status: state.Status{State: state.Running, IP: "10.1.2.3", StartedAt: &started}}}
	if l, err := a.List(ctx); err != nil || len(l) != 1 || !l[0].StartedAt.Equal(started) {
		t.Errorf("list %+v %v: want StartedAt %s", l, err, started)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := a.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-ch:
		if s.ProjectID != id || s.State != hubcontrol.Running || s.IP != "10.1.2.3" {
			t.Errorf("watch event %+v", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event")
	}
}
