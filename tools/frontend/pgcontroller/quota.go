package pgcontroller

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

// runQuota is what current CoCalc's hub stores in projects.run_quota (the
// quota a project runs with, computed from settings, user upgrades and site
// licenses; src/packages/util/upgrades/quota.ts). KuCalc's manage service
// reads it when it creates the pod.
type runQuota struct {
	CPULimit      *number `json:"cpu_limit"`      // cores
	CPURequest    *number `json:"cpu_request"`    // cores
	MemoryLimit   *number `json:"memory_limit"`   // MB
	MemoryRequest *number `json:"memory_request"` // MB (requests come from the template's overcommit)
	Network       flag    `json:"network"`
	IdleTimeout   *number `json:"idle_timeout"` // seconds
	AlwaysRunning flag    `json:"always_running"`
	GPU           gpu     `json:"gpu"`
}

// upgrades is the older quota format: projects.settings (admin-set base
// quotas) and projects.users[account].upgrades (added by users), in the
// units of 2020's upgrade-spec: cores, memory MB, cpu_shares (1024 = one
// core), mintime seconds, network 0/1, always_running 0/1.
type upgrades struct {
	Cores         *number `json:"cores"`
	Memory        *number `json:"memory"`
	CPUShares     *number `json:"cpu_shares"`
	Mintime       *number `json:"mintime"`
	Network       *number `json:"network"`
	AlwaysRunning *number `json:"always_running"`
}

// cocalcDefaults are CoCalc's DEFAULT_QUOTAS, the base when settings lack a
// field but users added upgrades on top of it.
var cocalcDefaults = upgrades{Cores: num(1), Memory: num(1000), CPUShares: num(0), Mintime: num(1800), Network: num(0), AlwaysRunning: num(0)}

// projectQuota is the quota a project starts with, and its idle policy.
type projectQuota struct {
	Quota         podtemplate.Quota
	AlwaysRunning bool
	// IdleTimeout is zero when the project is never stopped for idleness.
	IdleTimeout time.Duration
}

// quotaFor derives the run quota from the database columns. run_quota wins
// when it carries limits (current hubs); otherwise settings plus the sum of
// all users' upgrades (older hubs). Fields the database leaves unset stay
// zero, which the orchestrator replaces with the chart's defaults.
// Malformed JSON counts as unset: a bad row must never stop the controller.
func quotaFor(runQuotaJSON, settingsJSON, usersJSON []byte, defaultIdle time.Duration) projectQuota {
	var rq runQuota
	if json.Unmarshal(runQuotaJSON, &rq) == nil && (rq.CPULimit != nil || rq.MemoryLimit != nil) {
		q := projectQuota{AlwaysRunning: bool(rq.AlwaysRunning)}
		q.Quota.Cores = rq.CPULimit.value()
		q.Quota.MemoryMiB = int64(math.Round(rq.MemoryLimit.value()))
		q.Quota.CPUShares = int64(math.Round(rq.CPURequest.value() * 1000))
		q.Quota.Network = bool(rq.Network)
		q.Quota.GPUs = int64(rq.GPU)
		if rq.IdleTimeout != nil && !q.AlwaysRunning {
			q.IdleTimeout = time.Duration(rq.IdleTimeout.value() * float64(time.Second))
		}
		q.Quota.IdleTimeoutSeconds = orchestratorIdle(q)
		return q
	}

	var base upgrades
	_ = json.Unmarshal(settingsJSON, &base)
	var users map[string]struct {
		Upgrades upgrades `json:"upgrades"`
	}
	_ = json.Unmarshal(usersJSON, &users)
	sum := func(get func(upgrades) *number) (float64, bool) {
		added, any := 0.0, false
		for _, u := range users {
			if v := get(u.Upgrades); v != nil {
				added += v.value()
				any = true
			}
		}
		if b := get(base); b != nil {
			return b.value() + added, true
		}
		if any {
			return get(cocalcDefaults).value() + added, true
		}
		return 0, false
	}
	var q projectQuota
	q.Quota.Cores, _ = sum(func(u upgrades) *number { return u.Cores })
	mem, _ := sum(func(u upgrades) *number { return u.Memory })
	q.Quota.MemoryMiB = int64(math.Round(mem))
	shares, _ := sum(func(u upgrades) *number { return u.CPUShares })
	q.Quota.CPUShares = int64(math.Round(shares * 1000 / 1024))
	network, _ := sum(func(u upgrades) *number { return u.Network })
	q.Quota.Network = network > 0
	always, _ := sum(func(u upgrades) *number { return u.AlwaysRunning })
	q.AlwaysRunning = always > 0
	if !q.AlwaysRunning {
		if mintime, ok := sum(func(u upgrades) *number { return u.Mintime }); ok {
			q.IdleTimeout = time.Duration(mintime * float64(time.Second))
		} else {
			q.IdleTimeout = defaultIdle
		}
	}
	q.Quota.IdleTimeoutSeconds = orchestratorIdle(q)
	return q
}

// neverIdleSeconds is the longest idle timeout a quota may carry (ten
// years); the orchestrator reads 0 as "template default", not "never".
const neverIdleSeconds = 10 * 365 * 24 * 3600

// orchestratorIdle is the idle timeout handed to the orchestrator, whose own
// sweep is the fallback when this controller is not running.
func orchestratorIdle(q projectQuota) int64 {
	if q.AlwaysRunning || q.IdleTimeout <= 0 {
		return neverIdleSeconds
	}
	return int64(q.IdleTimeout / time.Second)
}

// number accepts a JSON number or a numeric string (CoCalc documents that
// some settings are stored as strings, e.g. disk_quota:"1000").
type number float64

func num(f float64) *number { n := number(f); return &n }

func (n *number) value() float64 {
	if n == nil {
		return 0
	}
	return float64(*n)
}

func (n *number) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err == nil {
		*n = number(f)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return nil // not a number: treated as 0
	}
	f, _ = strconv.ParseFloat(s, 64)
	*n = number(f)
	return nil
}

// flag accepts true/false, 0/1 and "true"/"1".
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true", "1", `"true"`, `"1"`:
		*f = true
	default:
		*f = false
	}
	return nil
}

// gpu accepts true (one GPU), false, or an object {"num": n}.
type gpu int64

func (g *gpu) UnmarshalJSON(b []byte) error {
	var v struct {
		Num *number `json:"num"`
	}
	switch {
	case string(b) == "true":
		*g = 1
	case json.Unmarshal(b, &v) == nil && v.Num != nil:
		*g = gpu(v.Num.value())
	case len(b) > 0 && b[0] == '{':
		*g = 1
	default:
		*g = 0
	}
	return nil
}
