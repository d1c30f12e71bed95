package pgcontroller

import (
	"encoding/json"
	"math"
	"reflect"
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

// TestComputeRunQuota: cases of CoCalc's own quota tests
// (src/packages/util/quota.test.ts), inputs and expected run quotas as
// written there.
func TestComputeRunQuota(t *testing.T) {
	onprem := func(s string) siteQuotaSettings {
		var v struct {
			DefaultQuotas map[string]any `json:"default_quotas"`
			MaxUpgrades   map[string]any `json:"max_upgrades"`
		}
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return siteQuotaSettings{DefaultQuotas: v.DefaultQuotas, MaxUpgrades: v.MaxUpgrades}
	}
	free := cocalcQuota{CPULimit: 1, CPURequest: 0.02, DiskQuota: 3000, IdleTimeout: 1800, MemoryLimit: 1000, MemoryRequest: 200}
	for _, tc := range []struct {
		name                     string
		settings, users, license string
		site                     siteQuotaSettings
		want                     cocalcQuota
	}{
		{name: "basics are fine", want: free},
		{name: "gives members a bit more memory by default", settings: `{}`, users: `{"userX": {"upgrades": {"member_host": 1}}}`,
			want: cocalcQuota{CPULimit: 1, CPURequest: 0.05, DiskQuota: 3000, IdleTimeout: 1800, MemberHost: true, MemoryLimit: 1000, MemoryRequest: 300}},
		{name: "respects admin member/network upgrades", settings: `{"member_host": 1, "network": 1}`, users: `{}`,
			want: cocalcQuota{CPULimit: 1, CPURequest: 0.05, DiskQuota: 3000, IdleTimeout: 1800, MemberHost: true, MemoryLimit: 1000, MemoryRequest: 300, Network: true}},
		{name: "adds up user contributions", users: `{"user1": {"upgrades": {"network": 1, "memory": 1500, "memory_request": 2500, "cpu_shares": 337.92}},
			"user2": {"upgrades": {"member_host": 1, "network": 1, "memory": 123, "cores": 0.5, "disk_quota": 1000}},
			"user3": {"upgrades": {"mintime": 99, "memory": 7}}}`,
			want: cocalcQuota{Network: true, MemberHost: true, MemoryRequest: 2500, MemoryLimit: 2630, CPURequest: 0.33, CPULimit: 1.5, IdleTimeout: 1899, DiskQuota: 4000}},
		{name: "caps user upgrades at their maximum", users: `{"user2": {"upgrades": {"network": 2, "member_host": 3, "disk_quota": 32000, "memory": 20000,
			"mintime": 8640000, "memory_request": 10000, "cores": 7, "cpu_shares": 4096}}}`,
			want: cocalcQuota{CPULimit: 3, CPURequest: 2, DiskQuota: 20000, IdleTimeout: 24 * 3600 * 90, MemberHost: true, MemoryLimit: 16000, MemoryRequest: 8000, Network: true}},
		{name: "does not limit admin upgrades", settings: `{"network": 2, "member_host": 3, "disk_quota": 32000, "memory": 20000,
			"mintime": 8640000, "memory_request": 10000, "cores": 7, "cpu_shares": 4096}`, users: `{}`,
			want: cocalcQuota{CPULimit: 7, CPURequest: 4, DiskQuota: 32000, IdleTimeout: 24 * 3600 * 100, MemberHost: true, MemoryLimit: 20000, MemoryRequest: 10000, Network: true}},
		{name: "combines admin and user upgrades properly", settings: `{"network": 1, "member_host": 0, "disk_quota": 19000, "memory": 1000,
			"mintime": 2851200, "memory_request": 1000, "cores": 1, "cpu_shares": 102.4}`,
			users: `{"user1": {"upgrades": {"member_host": true, "network": true, "memory_request": 3210, "disk_quota": 3000, "cores": 2, "mintime": 4320000, "cpu_shares": 512}},
			"user2": {"upgrades": {"member_host": true, "network": true, "cores": 2, "mintime": 4320000}}}`,
			want: cocalcQuota{Network: true, MemberHost: true, MemoryRequest: 4210, MemoryLimit: 1000, CPURequest: 0.6, CPULimit: 3,
				IdleTimeout: 24*3600*(90+33) - 1800, DiskQuota: 22000}},
		{name: "admin upgrades can move user upgrades beyond the limit", settings: `{"memory": 5000}`,
			users: `{"user1": {"upgrades": {"member_host": true, "network": true, "memory": 15000, "memory_request": 2000}}}`,
			want:  cocalcQuota{Network: true, MemberHost: true, MemoryLimit: 20000, CPULimit: 1, CPURequest: 0.05, DiskQuota: 3000, IdleTimeout: 1800, MemoryRequest: 2000}},
		{name: "site_settings default_quotas and max_upgrades/1", users: `{"userX": {}}`,
			site: onprem(`{"default_quotas": {"internet": true, "idle_timeout": 9999, "mem": 1515, "cpu": 1.6, "cpu_oc": 4, "mem_oc": 5},
				"max_upgrades": {"disk_quota": 512, "mintime": 3600, "cpu_shares": 102.4, "memory_request": 1000}}`),
			want: cocalcQuota{Network: true, MemoryRequest: 303, MemoryLimit: 1515, CPURequest: 0.1, CPULimit: 1.6, IdleTimeout: 3600, DiskQuota: 512}},
		{name: "takes overcommitment ratios into account for user upgrades", users: `{"user1": {"upgrades": {"memory": 3444, "cores": 1.5}}}`,
			site: onprem(`{"default_quotas": {"mem_oc": 4, "cpu_oc": 5}}`),
			want: cocalcQuota{MemoryRequest: 1111, MemoryLimit: 4444, CPURequest: 0.5, CPULimit: 2.5, DiskQuota: 3000, IdleTimeout: 1800}},
		{name: "sanitizes bad overcommitment ratios", users: `{"user1": {"upgrades": {"memory": 100, "cores": 1}}}`,
			site: onprem(`{"default_quotas": {"mem_oc": 0.25, "cpu_oc": 0}}`),
			want: cocalcQuota{MemoryRequest: 1100, MemoryLimit: 1100, CPURequest: 2, CPULimit: 2, DiskQuota: 3000, IdleTimeout: 1800}},
		{name: "overcommitment with fractions", users: `{"user1": {"upgrades": {"memory": 234.56, "cores": 0.234}}}`,
			site: onprem(`{"default_quotas": {"mem_oc": 2.22, "cpu_oc": 6.66}}`),
			want: cocalcQuota{MemoryRequest: math.Round(1234 / 2.22), MemoryLimit: 1234, CPURequest: 1.234 / 6.66, CPULimit: 1.234, DiskQuota: 3000, IdleTimeout: 1800}},
		{name: "handles always_running admin upgrades", settings: `{"member_host": 1, "network": 1, "always_running": 1}`, users: `{}`,
			want: cocalcQuota{CPULimit: 1, CPURequest: 0.05, DiskQuota: 3000, IdleTimeout: 1800, MemberHost: true, MemoryLimit: 1000, MemoryRequest: 300, Network: true, AlwaysRunning: true}},
		{name: "always_running from a site_license", users: `{"userX": {}}`, license: `{"1234-5678-asdf-yxcv": {"member_host": true, "network": true, "always_running": true}}`,
			want: cocalcQuota{CPULimit: 1, CPURequest: 0.05, DiskQuota: 3000, IdleTimeout: 1800, MemberHost: true, MemoryLimit: 1000, MemoryRequest: 300, Network: true, AlwaysRunning: true}},
		{name: "site_license basic update as expected", license: `{"1234-5432-3456-7654": {"ram": 1, "cpu": 1, "disk": 3, "member": true}}`, want: free},
		{name: "site_license 'complements' user upgrades", license: `{"1234-5432-3456-7654": {"quota": {"ram": 2, "cpu": 1.5, "disk": 5, "member": true}}}`,
			users: `{"user1": {"upgrades": {"member_host": false, "network": true, "memory_request": 1234, "memory": 2345, "mintime": 4320000}}}`,
			want:  cocalcQuota{CPULimit: 1.5, CPURequest: 0.05, DiskQuota: 5000, IdleTimeout: 4321800, MemberHost: true, MemoryLimit: 3345, MemoryRequest: 1234, Network: true}},
		{name: "site_license always_running do not mix", users: `{"userX": {}}`,
			license: `{"a": {"quota": {"ram": 4, "always_running": false}}, "b": {"quota": {"ram": 2, "always_running": true}}, "c": {"quota": {"ram": 1, "always_running": true}}}`,
			want:    cocalcQuota{AlwaysRunning: true, MemoryLimit: 3000, Network: true, CPULimit: 1, CPURequest: 0.02, DiskQuota: 3000, IdleTimeout: 1800, MemoryRequest: 200}},
		{name: "site-license quota upgrades /1", users: `{"user1": {"upgrades": {"memory": 1313}}}`,
			license: `{"1234-5678-asdf-yxcv": {"quota": {"ram": 2, "dedicated_ram": 1, "cpu": 1, "dedicated_cpu": 0.5, "disk": 3, "always_running": true, "member": true, "user": "academic"}}}`,
			want:    cocalcQuota{Network: true, MemberHost: true, MemoryRequest: 1000, CPURequest: 0.5, DiskQuota: 3000, MemoryLimit: 3000, CPULimit: 1.5, IdleTimeout: 1800, AlwaysRunning: true}},
		{name: "site-license quota upgrades /2", users: `{"user1": {"upgrades": {"memory": 4321}}}`,
			license: `{"1234-5678-asdf-yxcv": {"quota": {"ram": 2, "cpu": 1.5, "disk": 3, "always_running": true, "member": true, "user": "academic"}}}`,
			want:    cocalcQuota{Network: true, MemberHost: true, MemoryRequest: 300, CPURequest: 0.05, DiskQuota: 3000, MemoryLimit: 5321, CPULimit: 1.5, IdleTimeout: 1800, AlwaysRunning: true}},
		{name: "uses different default_quotas", users: `{"userX": {}}`,
			site: onprem(`{"default_quotas": {"internet": true, "idle_timeout": 9999, "cpu": 1.5, "cpu_oc": 10, "mem": 2000, "mem_oc": 4, "disk_quota": 5432}}`),
			want: cocalcQuota{Network: true, MemoryRequest: 500, MemoryLimit: 2000, CPURequest: 0.15, CPULimit: 1.5, IdleTimeout: 9999, DiskQuota: 5432}},
		{name: "licensed idle timeout / member + short", users: `{"userX": {}}`,
			license: `{"1234-5678-asdf-yxcv": {"quota": {"ram": 2, "cpu": 1, "disk": 4, "member": true, "user": "academic"}},
				"4321-5678-asdf-yxcv": {"quota": {"ram": 2, "cpu": 1, "disk": 1, "idle_timeout": "short", "user": "academic"}}}`,
			want: cocalcQuota{IdleTimeout: 1800, MemberHost: true, Network: true, MemoryRequest: 300, MemoryLimit: 4000, CPURequest: 0.05, CPULimit: 2, DiskQuota: 5000}},
		{name: "licensed idle timeout / don't mix short and medium", users: `{"userX": {}}`,
			license: `{"1234-5678-asdf-yxcv": {"quota": {"ram": 2, "cpu": 2, "disk": 6, "idle_timeout": "medium", "user": "academic"}},
				"4321-5678-asdf-yxcv": {"quota": {"ram": 1, "cpu": 1, "disk": 4, "idle_timeout": "short", "user": "academic"}}}`,
			want: cocalcQuota{IdleTimeout: 7200, MemberHost: true, Network: true, MemoryRequest: 300, MemoryLimit: 2000, CPURequest: 0.05, CPULimit: 2, DiskQuota: 6000}},
		{name: "licensed idle timeout / day", license: `{"l": {"quota": {"idle_timeout": "day"}}}`,
			want: cocalcQuota{IdleTimeout: 86400, MemberHost: true, Network: true, MemoryRequest: 300, MemoryLimit: 1000, CPURequest: 0.05, CPULimit: 1, DiskQuota: 3000}},
		{name: "boost: add 4 gb ram to a small license",
			license: `{"regular": {"title": "standard", "quota": {"cpu": 1, "ram": 1, "disk": 1, "member": true}, "run_limit": 1},
				"boost": {"quota": {"ram": 4, "member": true, "boost": true}, "run_limit": 3}}`,
			want: cocalcQuota{CPULimit: 1, CPURequest: 0.05, DiskQuota: 3000, IdleTimeout: 1800, MemberHost: true, MemoryLimit: 5000, MemoryRequest: 300, Network: true}},
		// Licenses the hub's hook marked unusable give nothing.
		{name: "expired license", license: `{"x": {"quota": {"ram": 8, "cpu": 2, "member": true}, "status": "expired"}}`, want: free},
		{name: "disableInternet wins", settings: `{"network": 1, "disableInternet": true}`, want: free},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := computeRunQuota([]byte(tc.settings), []byte(tc.users), []byte(tc.license), tc.site)
			g, w := reflect.ValueOf(got), reflect.ValueOf(tc.want)
			for i := range g.NumField() {
				gf, wf := g.Field(i), w.Field(i)
				name := g.Type().Field(i).Tag.Get("json")
				switch gf.Kind() {
				case reflect.Bool:
					if gf.Bool() != wf.Bool() {
						t.Errorf("%s = %v, want %v", name, gf.Bool(), wf.Bool())
					}
				default:
					if math.Abs(gf.Float()-wf.Float()) > 1e-9 {
						t.Errorf("%s = %v, want %v", name, gf.Float(), wf.Float())
					}
				}
			}
		})
	}
}

// TestClampToTemplate: the run_quota written back never states more than
// the chart's resources.max gives the pod.
func TestClampToTemplate(t *testing.T) {
	r := podtemplate.Resources{
		Min: podtemplate.Quota{Cores: 0.5, MemoryMiB: 500},
		Max: podtemplate.Quota{Cores: 4, MemoryMiB: 8000, CPUShares: 2000, IdleTimeoutSeconds: 86400, Network: false},
	}
	in := cocalcQuota{Network: true, CPULimit: 64, MemoryLimit: 16000, CPURequest: 3, MemoryRequest: 8000, IdleTimeout: 7 * 86400, DiskQuota: 20000}
	want := cocalcQuota{Network: false, CPULimit: 4, MemoryLimit: 8000, CPURequest: 2, MemoryRequest: 8000, IdleTimeout: 86400, DiskQuota: 20000}
	if got := clampToTemplate(in, r); got != want {
		t.Errorf("clamped %+v, want %+v", got, want)
	}
	small := cocalcQuota{CPULimit: 0.1, MemoryLimit: 100, IdleTimeout: 600, AlwaysRunning: true}
	if got := clampToTemplate(small, r); got.CPULimit != 0.5 || got.MemoryLimit != 500 || got.IdleTimeout != 600 {
		t.Errorf("raised to the minimum %+v", got)
	}
}
