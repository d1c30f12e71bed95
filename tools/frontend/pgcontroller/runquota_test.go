package pgcontroller

import (
	"context"
	"encoding/json"
	"testing"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// TestStartWritesRunQuota: a start computes run_quota from the row (site
// license as the hub's license hook records it) and the site's on-prem
// settings, writes it back, and starts the pod with it.
func TestStartWritesRunQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.exec(`INSERT INTO server_settings (name, value) VALUES ('kucalc', 'onprem'), ('default_quotas', '{"cpu_oc": 4}')`)
	e.addProject(p1)
	e.addProject(p2)
	e.exec(`UPDATE projects SET site_license = $2::jsonb WHERE project_id = $1`, p1,
		`{"a8f0a1a4-0000-4000-8000-000000000001": {"quota": {"cpu": 2, "ram": 3, "disk": 5, "idle_timeout": "medium", "user": "academic"}, "status": "active"}}`)
	// A license the hook found expired, and a stale run_quota: neither counts.
	e.exec(`UPDATE projects SET run_quota = '{"cpu_limit": 3, "memory_limit": 8000}', site_license = $2::jsonb WHERE project_id = $1`, p2,
		`{"a8f0a1a4-0000-4000-8000-000000000002": {"quota": {"cpu": 3, "ram": 8}, "status": "expired"}}`)
	e.start(e.config(), e.fake)

	for _, id := range []string{p1, p2} {
		e.request(id, "start")
		if req := e.waitFinished(id); req["err"] != nil {
			t.Fatalf("start %s: %v", id, req["err"])
		}
	}
	for _, tc := range []struct {
		id    string
		quota podtemplate.Quota
		run   cocalcQuota
	}{
		// 2 cores and 3 GB from the license, requests 1:4 from the site,
		// the license's medium idle timeout (2 h), member hosting, network.
		{p1, podtemplate.Quota{Cores: 2, MemoryMiB: 3000, CPUShares: 500, Network: true, IdleTimeoutSeconds: 7200},
			cocalcQuota{Network: true, MemberHost: true, DiskQuota: 5000, MemoryLimit: 3000, MemoryRequest: 300, CPULimit: 2, CPURequest: 0.5, IdleTimeout: 7200}},
		// CoCalc's defaults (the template's idle timeout as the base).
		{p2, podtemplate.Quota{Cores: 1, MemoryMiB: 1000, CPUShares: 250, IdleTimeoutSeconds: 1800},
			cocalcQuota{DiskQuota: 3000, MemoryLimit: 1000, MemoryRequest: 200, CPULimit: 1, CPURequest: 0.25, IdleTimeout: 1800}},
	} {
		calls := e.fake.Calls("start")
		var got *podtemplate.Quota
		for _, c := range calls {
			if c.ProjectID == project.ID(tc.id) {
				got = &c.Request.Quota
			}
		}
		if got == nil || *got != tc.quota {
			t.Errorf("%s started with %+v, want %+v", tc.id, got, tc.quota)
		}
		var raw []byte
		if err := e.pool.QueryRow(context.Background(), `SELECT run_quota FROM projects WHERE project_id = $1`, tc.id).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		var run cocalcQuota
		if err := json.Unmarshal(raw, &run); err != nil || run != tc.run {
			t.Errorf("%s run_quota %s, want %+v (%v)", tc.id, raw, tc.run, err)
		}
	}
}
