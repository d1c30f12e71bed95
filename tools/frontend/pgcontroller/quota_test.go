package pgcontroller

import (
	"strings"
	"testing"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

func TestQuotaFor(t *testing.T) {
	const def = 30 * time.Minute
	for _, tc := range []struct {
		name                      string
		runQuota, settings, users string
		want                      podtemplate.Quota
		always                    bool
		idle                      time.Duration
	}{
		{
			name:     "run_quota of a current hub",
			runQuota: `{"cpu_limit": 1.5, "cpu_request": 0.1, "memory_limit": 2000, "memory_request": 300, "network": true, "idle_timeout": 1800, "gpu": {"num": 2}}`,
			want:     podtemplate.Quota{Cores: 1.5, CPUShares: 100, MemoryMiB: 2000, Network: true, GPUs: 2, IdleTimeoutSeconds: 1800},
			idle:     30 * time.Minute,
		},
		{
			name:     "always running has no idle timeout",
			runQuota: `{"cpu_limit": 1, "memory_limit": 1000, "idle_timeout": 600, "always_running": true}`,
			want:     podtemplate.Quota{Cores: 1, MemoryMiB: 1000, IdleTimeoutSeconds: neverIdleSeconds},
			always:   true,
		},
		{
			name:     "run_quota without idle_timeout never idles (as CoCalc's query)",
			runQuota: `{"cpu_limit": 1, "memory_limit": 1000}`,
			want:     podtemplate.Quota{Cores: 1, MemoryMiB: 1000, IdleTimeoutSeconds: neverIdleSeconds},
		},
		{
			name:     "settings plus user upgrades (older hubs)",
			settings: `{"cores": 1, "memory": 1000, "cpu_shares": 256, "mintime": 3600, "network": 0}`,
			users:    `{"acc1": {"group": "owner", "upgrades": {"cores": 1, "memory": "500", "network": 1}}, "acc2": {"group": "collaborator"}}`,
			want:     podtemplate.Quota{Cores: 2, MemoryMiB: 1500, CPUShares: 250, Network: true, IdleTimeoutSeconds: 3600},
			idle:     time.Hour,
		},
		{
			name:  "upgrades without settings start from CoCalc's defaults",
			users: `{"a": {"upgrades": {"memory": 1000, "mintime": 600}}}`,
			want:  podtemplate.Quota{MemoryMiB: 2000, IdleTimeoutSeconds: 2400},
			idle:  40 * time.Minute,
		},
		{
			name: "nothing known: template defaults and the default idle timeout",
			want: podtemplate.Quota{IdleTimeoutSeconds: 1800},
			idle: def,
		},
		{
			name:     "always_running setting",
			settings: `{"always_running": 1}`,
			want:     podtemplate.Quota{IdleTimeoutSeconds: neverIdleSeconds},
			always:   true,
		},
		{
			name:     "malformed JSON is ignored, never fatal",
			runQuota: `{"cpu_limit": "lots"`,
			settings: `[1,2]`,
			users:    `"x"`,
			want:     podtemplate.Quota{IdleTimeoutSeconds: 1800},
			idle:     def,
		},
		{
			name:     "wrong types inside run_quota",
			runQuota: `{"cpu_limit": "2", "memory_limit": {"x": 1}, "network": "1", "gpu": true}`,
			want:     podtemplate.Quota{Cores: 2, Network: true, GPUs: 1, IdleTimeoutSeconds: neverIdleSeconds},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := func(s string) []byte {
				if s == "" {
					return nil
				}
				return []byte(s)
			}
			got := quotaFor(b(tc.runQuota), b(tc.settings), b(tc.users), def)
			if got.Quota != tc.want || got.AlwaysRunning != tc.always || got.IdleTimeout != tc.idle {
				t.Errorf("got %+v always=%v idle=%v\nwant %+v always=%v idle=%v", got.Quota, got.AlwaysRunning, got.IdleTimeout, tc.want, tc.always, tc.idle)
			}
		})
	}
}

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		raw, problem, action string
	}{
		{``, "none", ""},
		{`null`, "none", ""},
		{`{"action":"start","time":"2026-01-01T00:00:00.000Z"}`, "", "start"},
		{`{"action":"stop","finished":"2026-01-01T00:00:00.000Z"}`, "none", ""},
		{`{"action":"restart","finished":null}`, "", "restart"},
		{`{"action":"save"}`, `unsupported action "save" (supported: start, stop, restart)`, ""},
		{`{}`, "action_request has no action", ""},
		{`"start"`, "action_request is not a JSON object", ""},
		{`[]`, "action_request is not a JSON object", ""},
	} {
		req, problem := parseRequest([]byte(tc.raw))
		if problem != tc.problem || (tc.problem == "" && req.Action != tc.action) {
			t.Errorf("parseRequest(%s) = %q, %q; want %q, %q", tc.raw, req.Action, problem, tc.action, tc.problem)
		}
	}
}

func TestHubPayloadProjectID(t *testing.T) {
	for payload, want := range map[string]string{
		`["UPDATE",{"project_id":"aaaaaaaa-0000-4000-8000-000000000001"},{"project_id":"aaaaaaaa-0000-4000-8000-000000000001"}]`: "aaaaaaaa-0000-4000-8000-000000000001",
		`["DELETE",null,{"project_id":"aaaaaaaa-0000-4000-8000-000000000002"}]`:                                                  "aaaaaaaa-0000-4000-8000-000000000002",
		`["INSERT"]`: "",
		`garbage`:    "",
	} {
		if got := hubPayloadProjectID(payload); got != want {
			t.Errorf("hubPayloadProjectID(%s) = %q, want %q", payload, got, want)
		}
	}
	// The hub names its synctable trigger change_<16 hex of sha1>.
	if len(hubChannel) != len("change_")+16 {
		t.Errorf("hub channel %q", hubChannel)
	}
}

func TestParseJSTime(t *testing.T) {
	if ts, ok := parseJSTime([]byte(`"2026-11-27T11:07:28.123Z"`)); !ok || ts.UnixMilli() != time.Date(2026, 11, 27, 11, 7, 28, 123e6, time.UTC).UnixMilli() {
		t.Errorf("got %v %v", ts, ok)
	}
	for _, bad := range []string{`12`, `"yesterday"`, ``} {
		if _, ok := parseJSTime([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestRandomToken(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		tok, err := randomToken(secretTokenLength)
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != secretTokenLength || strings.Trim(tok, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" || seen[tok] {
			t.Fatalf("bad or repeated token %q", tok)
		}
		seen[tok] = true
	}
}
