package pgcontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
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

// The run quota as current CoCalc's quota() computes it
// (src/packages/util/upgrades/quota.ts): the hub in kucalc mode leaves this
// to the cluster side ("Manage has to do the equivalent of
// computeQuota()"), so the controller computes it on every start and
// writes it to projects.run_quota. Inputs: projects.settings (admin
// upgrades), projects.users[*].upgrades, projects.site_license (filled by
// the hub's site-license hook before it requests the start: upgrade-format
// entries, or {quota: {...}} entries with a status) and the site settings
// default_quotas and max_upgrades (server_settings rows, used by quota()
// only when the site's kucalc setting is "onprem"). Not covered: dedicated
// VMs and disks (no such hosts here; those licenses are ignored),
// pay-as-you-go purchases, GPU/patch/ext_rw on-prem license extras.

// cocalcQuota is one quota in CoCalc's run-quota units: MB, cores, seconds.
type cocalcQuota struct {
	Network       bool    `json:"network"`
	MemberHost    bool    `json:"member_host"`
	AlwaysRunning bool    `json:"always_running"`
	Privileged    bool    `json:"privileged"`
	DiskQuota     float64 `json:"disk_quota"`
	MemoryLimit   float64 `json:"memory_limit"`
	MemoryRequest float64 `json:"memory_request"`
	CPULimit      float64 `json:"cpu_limit"`
	CPURequest    float64 `json:"cpu_request"`
	IdleTimeout   float64 `json:"idle_timeout"`
}

// Upgrade-spec constants of current CoCalc (upgrade-spec.ts, quota.ts,
// consts/site-license.ts).
var (
	cocalcBase = cocalcQuota{DiskQuota: 3000, MemoryLimit: 1000, CPULimit: 1, IdleTimeout: 1800}
	// maxPerProject is upgrades.max_per_project, in upgrade units.
	maxPerProject = map[string]any{"disk_quota": 20000.0, "memory": 16000.0, "memory_request": 8000.0, "cores": 3.0,
		"network": 1.0, "cpu_shares": 2048.0, "mintime": 90 * 24 * 3600.0, "member_host": 1.0, "always_running": 1.0}
	// licenseIdleMinutes is LicenseIdleTimeouts; the selection order is
	// longest first.
	licenseIdleMinutes = map[string]float64{"short": 30, "medium": 120, "day": 24 * 60}
	licenseIdleOrder   = []string{"day", "medium", "short"}
)

// siteQuotaSettings are the site settings quota() reads.
type siteQuotaSettings struct {
	DefaultQuotas map[string]any
	MaxUpgrades   map[string]any
	// BaseIdleTimeout (seconds), when positive, replaces CoCalc's built-in
	// 1800 s default below the site's default_quotas: the chart template's
	// default idle timeout.
	BaseIdleTimeout float64
}

// computeRunQuota is quota(settings, users, site_license, site_settings).
func computeRunQuota(settingsJSON, usersJSON, siteLicenseJSON []byte, site siteQuotaSettings) cocalcQuota {
	var settings map[string]any
	_ = json.Unmarshal(settingsJSON, &settings)
	var users map[string]struct {
		Upgrades map[string]any `json:"upgrades"`
	}
	_ = json.Unmarshal(usersJSON, &users)
	var licenses map[string]map[string]any
	_ = json.Unmarshal(siteLicenseJSON, &licenses)

	base := cocalcBase
	if site.BaseIdleTimeout > 0 {
		base.IdleTimeout = site.BaseIdleTimeout
	}
	quota := defaultCocalcQuota(base, site.DefaultQuotas)
	maxUp := map[string]any{}
	for k, v := range maxPerProject {
		maxUp[k] = v
	}
	for k, v := range site.MaxUpgrades {
		maxUp[k] = v
	}
	maxQ := upgradeToQuota(maxUp)

	selected := selectLicenses(licenses)
	var userSum, licenseUpgradeSum, licenseQuotaSum cocalcQuota
	for _, u := range users {
		if u.Upgrades != nil {
			userSum = sumQuota(userSum, upgradeToQuota(u.Upgrades))
		}
	}
	for _, l := range selected {
		if q, ok := licenseQuota(l); ok {
			licenseQuotaSum = sumQuota(licenseQuotaSum, q)
		} else if isUpgradeLicense(l) {
			licenseUpgradeSum = sumQuota(licenseUpgradeSum, upgradeToQuota(l))
		}
	}
	// Licensed idle timeouts do not add up: the selected licenses share one.
	for _, l := range selected {
		if q, ok := l["quota"].(map[string]any); ok {
			licenseQuotaSum.IdleTimeout = licenseIdleMinutes[licenseIdle(q)] * 60
			break
		}
	}

	quota = minQuota(quota, maxQ)
	admin := upgradeToQuota(settings)
	contribs := sumQuota(userSum, licenseUpgradeSum)
	total := maxQuota(sumQuota(maxQuota(quota, admin), limitContribs(quota, contribs, maxQ)), minQuota(licenseQuotaSum, maxQ))
	total = overcommit(total, site.DefaultQuotas, maxQ)
	total.MemoryLimit = math.Floor(total.MemoryLimit)
	total.MemoryRequest = math.Floor(total.MemoryRequest)
	total = ensureMinimum(total, maxQ)
	if b, ok := settings["disableInternet"].(bool); ok && b {
		total.Network = false
	}
	return total
}

// defaultCocalcQuota is calcDefaultQuotas: the base, overridden by the
// site's default_quotas (only fields of the right JSON type count).
func defaultCocalcQuota(q cocalcQuota, d map[string]any) cocalcQuota {
	if v, ok := d["disk_quota"].(float64); ok {
		q.DiskQuota = v
	}
	if v, ok := d["internet"].(bool); ok {
		q.Network = v
	}
	if v, ok := d["idle_timeout"].(float64); ok {
		q.IdleTimeout = v
	}
	if v, ok := d["mem"].(float64); ok {
		q.MemoryLimit = v
		if oc, ok := overcommitRatio(d["mem_oc"]); ok {
			q.MemoryRequest = math.Round(v / oc)
		}
	}
	if v, ok := d["cpu"].(float64); ok {
		q.CPULimit = v
		if oc, ok := overcommitRatio(d["cpu_oc"]); ok {
			q.CPURequest = v / oc
		}
	}
	return q
}

func overcommitRatio(v any) (float64, bool) {
	f, ok := v.(float64)
	if !ok {
		return 0, false
	}
	return math.Max(1, f), true
}

// overcommit is calc_oc: requests raised to limit/ratio, capped by the max.
func overcommit(q cocalcQuota, d map[string]any, maxQ cocalcQuota) cocalcQuota {
	if d == nil {
		return q
	}
	if oc, ok := overcommitRatio(d["cpu_oc"]); ok {
		q.CPURequest = math.Min(math.Max(q.CPURequest, q.CPULimit/oc), maxQ.CPURequest)
	}
	if oc, ok := overcommitRatio(d["mem_oc"]); ok {
		q.MemoryRequest = math.Min(math.Max(q.MemoryRequest, q.MemoryLimit/oc), maxQ.MemoryRequest)
	}
	return q
}

// ensureMinimum is ensure_minimum: guaranteed CPU and memory, and a memory
// limit of at least the default; each floor capped by the max.
func ensureMinimum(q cocalcQuota, maxQ cocalcQuota) cocalcQuota {
	floor := func(v *float64, member, nonmember, max float64) {
		c := nonmember
		if q.MemberHost {
			c = member
		}
		*v = math.Max(*v, math.Min(c, max))
	}
	floor(&q.CPURequest, 0.05, 0.02, maxQ.CPURequest)
	floor(&q.MemoryRequest, 300, 200, maxQ.MemoryRequest)
	floor(&q.MemoryLimit, 1000, 1000, maxQ.MemoryLimit)
	return q
}

// limitContribs is calc_quota: user and upgrade-license contributions,
// limited to what is left between the default and the max.
func limitContribs(def, c, maxQ cocalcQuota) cocalcQuota {
	b := func(max, d, v bool) bool { return max && (d || v) }
	n := func(max, d, v float64) float64 { return math.Min(v, math.Max(0, max-d)) }
	return cocalcQuota{
		Network:       b(maxQ.Network, def.Network, c.Network),
		MemberHost:    b(maxQ.MemberHost, def.MemberHost, c.MemberHost),
		AlwaysRunning: b(maxQ.AlwaysRunning, def.AlwaysRunning, c.AlwaysRunning),
		Privileged:    b(maxQ.Privileged, def.Privileged, c.Privileged),
		DiskQuota:     n(maxQ.DiskQuota, def.DiskQuota, c.DiskQuota),
		MemoryLimit:   n(maxQ.MemoryLimit, def.MemoryLimit, c.MemoryLimit),
		MemoryRequest: n(maxQ.MemoryRequest, def.MemoryRequest, c.MemoryRequest),
		CPULimit:      n(maxQ.CPULimit, def.CPULimit, c.CPULimit),
		CPURequest:    n(maxQ.CPURequest, def.CPURequest, c.CPURequest),
		IdleTimeout:   n(maxQ.IdleTimeout, def.IdleTimeout, c.IdleTimeout),
	}
}

func combineQuota(a, b cocalcQuota, bf func(x, y bool) bool, nf func(x, y float64) float64) cocalcQuota {
	return cocalcQuota{
		Network: bf(a.Network, b.Network), MemberHost: bf(a.MemberHost, b.MemberHost),
		AlwaysRunning: bf(a.AlwaysRunning, b.AlwaysRunning), Privileged: bf(a.Privileged, b.Privileged),
		DiskQuota: nf(a.DiskQuota, b.DiskQuota), MemoryLimit: nf(a.MemoryLimit, b.MemoryLimit),
		MemoryRequest: nf(a.MemoryRequest, b.MemoryRequest), CPULimit: nf(a.CPULimit, b.CPULimit),
		CPURequest: nf(a.CPURequest, b.CPURequest), IdleTimeout: nf(a.IdleTimeout, b.IdleTimeout),
	}
}

func or(x, y bool) bool                     { return x || y }
func and(x, y bool) bool                    { return x && y }
func add(x, y float64) float64              { return x + y }
func sumQuota(a, b cocalcQuota) cocalcQuota { return combineQuota(a, b, or, add) }
func minQuota(a, b cocalcQuota) cocalcQuota { return combineQuota(a, b, and, math.Min) }
func maxQuota(a, b cocalcQuota) cocalcQuota { return combineQuota(a, b, or, math.Max) }

// upgradeToQuota is upgrade2quota: the upgrade format (cores, memory MB,
// cpu_shares 1024 per core, mintime seconds, 0/1 flags; numbers may be
// strings) in run-quota units.
func upgradeToQuota(u map[string]any) cocalcQuota {
	flag := func(k string) bool {
		switch v := u[k].(type) {
		case nil:
			return false
		case bool:
			return v
		case float64:
			return math.Trunc(v) >= 1
		case string:
			return jsParseInt(v) >= 1
		}
		return false
	}
	num := func(k string) float64 {
		switch v := u[k].(type) {
		case float64:
			return v
		case string:
			if f := jsParseFloat(v); !math.IsNaN(f) {
				return f
			}
		}
		return 0
	}
	return cocalcQuota{
		Network: flag("network"), MemberHost: flag("member_host"), AlwaysRunning: flag("always_running"), Privileged: flag("privileged"),
		DiskQuota: num("disk_quota"), MemoryLimit: num("memory"), MemoryRequest: num("memory_request"),
		CPULimit: num("cores"), CPURequest: num("cpu_shares") / 1024, IdleTimeout: num("mintime"),
	}
}

// licenseQuota is license2quota for a {quota: {...}} license: any such
// license gives network; RAM and disk are in GB.
func licenseQuota(l map[string]any) (cocalcQuota, bool) {
	q, ok := l["quota"].(map[string]any)
	if !ok {
		return cocalcQuota{}, false
	}
	f := func(k string) float64 { v, _ := q[k].(float64); return v }
	truthy := func(k string) bool {
		switch v := q[k].(type) {
		case bool:
			return v
		case float64:
			return v != 0
		case string:
			return v != ""
		}
		return q[k] != nil
	}
	return cocalcQuota{
		Network: true, MemberHost: truthy("member"), AlwaysRunning: truthy("always_running"),
		DiskQuota: 1000 * f("disk"), MemoryLimit: 1000 * (f("ram") + f("dedicated_ram")), MemoryRequest: 1000 * f("dedicated_ram"),
		CPULimit: f("cpu") + f("dedicated_cpu"), CPURequest: f("dedicated_cpu"),
	}, true
}

// isUpgradeLicense is isSettingsQuota: an upgrade-format license entry.
func isUpgradeLicense(l map[string]any) bool {
	if l["quota"] != nil {
		return false
	}
	for _, k := range []string{"disk_quota", "memory", "memory_request", "cores", "network", "cpu_shares", "mintime",
		"member_host", "ephemeral_state", "ephemeral_disk", "always_running"} {
		if l[k] != nil {
			return true
		}
	}
	return false
}

// licenseIdle is the license's idle timeout key; unknown or missing ones
// are "short" (prepareSiteLicenses).
func licenseIdle(q map[string]any) string {
	if s, ok := q["idle_timeout"].(string); ok {
		if _, known := licenseIdleMinutes[s]; known {
			return s
		}
	}
	return "short"
}

// selectLicenses is pickValidLicenses, prepareSiteLicenses and
// selectSiteLicenses: licenses that are not expired, exhausted or future,
// grouped by (always running, member hosting, idle timeout); only the
// highest-priority group counts (always running first, then member
// hosting, then the longest idle timeout), plus boost licenses of exactly
// that group. Dedicated VM and disk licenses are left out.
func selectLicenses(all map[string]map[string]any) []map[string]any {
	type entry struct {
		l     map[string]any
		group string
		boost bool
	}
	var entries []entry
	for _, l := range all {
		if l == nil {
			continue
		}
		if s, _ := l["status"].(string); s == "expired" || s == "exhausted" || s == "future" {
			continue
		}
		ar, member, idle, boost := false, false, "short", false
		if q, ok := l["quota"].(map[string]any); ok {
			if q["dedicated_vm"] != nil || q["dedicated_disk"] != nil {
				continue
			}
			// prepareSiteLicenses: every license with an idle timeout is
			// member hosting unless it says otherwise; unknown or missing
			// timeouts become "short".
			if _, has := q["idle_timeout"]; has && q["member"] != false {
				q["member"] = true
			}
			idle = licenseIdle(q)
			q["idle_timeout"] = idle
			member = q["member"] == true
			ar = q["always_running"] == true
			boost = q["boost"] == true
		} else {
			u := upgradeToQuota(l)
			ar, member = u.AlwaysRunning, u.MemberHost
		}
		entries = append(entries, entry{l: l, group: licenseGroup(ar, member, idle), boost: boost})
	}
	for _, ar := range []bool{true, false} {
		for _, member := range []bool{true, false} {
			for _, idle := range licenseIdleOrder {
				g := licenseGroup(ar, member, idle)
				var regular, boosts []map[string]any
				for _, e := range entries {
					if e.group != g {
						continue
					}
					if e.boost {
						boosts = append(boosts, e.l)
					} else {
						regular = append(regular, e.l)
					}
				}
				if len(regular) > 0 {
					return append(regular, boosts...)
				}
			}
		}
	}
	return nil
}

func licenseGroup(ar, member bool, idle string) string {
	return fmt.Sprintf("%t-%t-%s", ar, member, idle)
}

// jsParseFloat is JavaScript's parseFloat (the longest numeric prefix).
func jsParseFloat(s string) float64 {
	s = strings.TrimLeft(s, " \t\n\r")
	if len(s) > 64 {
		s = s[:64]
	}
	for end := len(s); end > 0; end-- {
		if f, err := strconv.ParseFloat(s[:end], 64); err == nil && !strings.ContainsAny(s[:end], "xXpP_") {
			return f
		}
	}
	return math.NaN()
}

// jsParseInt is JavaScript's parseInt in base 10 (NaN counts as 0 here).
func jsParseInt(s string) float64 {
	s = strings.TrimLeft(s, " \t\n\r")
	end := 0
	if end < len(s) && (s[end] == '-' || s[end] == '+') {
		end++
	}
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, err := strconv.ParseFloat(s[:end], 64)
	if err != nil {
		return 0
	}
	return n
}

// writeRunQuota computes the project's run quota (computeRunQuota) from
// its row and the site settings, writes it to projects.run_quota as
// KuCalc's manage service did on start, and returns it as JSON. The idle
// timeout base is the template's default (DefaultIdleTimeout) unless the
// site's default_quotas name one. On any error it logs and returns nil: the
// start then uses the columns as they are.
func (c *controller) writeRunQuota(ctx context.Context, id string) []byte {
	var settings, users, licenses []byte
	err := c.pool.QueryRow(ctx, `SELECT settings, users, site_license FROM projects WHERE project_id = $1`, id).
		Scan(&settings, &users, &licenses)
	if err != nil {
		c.log.Warn("cannot compute run_quota", "project", id, "err", err)
		return nil
	}
	site := c.siteQuotaSettings(ctx)
	q := computeRunQuota(settings, users, licenses, site)
	if c.cfg.Resources != nil {
		q = clampToTemplate(q, *c.cfg.Resources)
	}
	out, err := json.Marshal(q)
	if err != nil {
		return nil
	}
	if _, err := c.pool.Exec(ctx, `UPDATE projects SET run_quota = $2::jsonb WHERE project_id = $1`, id, string(out)); err != nil {
		c.log.Warn("cannot write run_quota", "project", id, "err", err)
	}
	return out
}

// siteQuotaSettings reads default_quotas and max_upgrades from the hub's
// server_settings, which quota() uses only on a site whose kucalc setting
// is "onprem" (getQuotaSiteSettings). A missing table or row means none.
func (c *controller) siteQuotaSettings(ctx context.Context) siteQuotaSettings {
	site := siteQuotaSettings{BaseIdleTimeout: c.cfg.DefaultIdleTimeout.Seconds()}
	rows, err := c.pool.Query(ctx, `SELECT name, value FROM server_settings WHERE name IN ('kucalc', 'default_quotas', 'max_upgrades')`)
	if err != nil {
		return site
	}
	defer rows.Close()
	values := map[string]string{}
	for rows.Next() {
		var name string
		var value *string
		if rows.Scan(&name, &value) == nil && value != nil {
			values[name] = *value
		}
	}
	if rows.Err() != nil || values["kucalc"] != "onprem" {
		return site
	}
	_ = json.Unmarshal([]byte(values["default_quotas"]), &site.DefaultQuotas)
	_ = json.Unmarshal([]byte(values["max_upgrades"]), &site.MaxUpgrades)
	return site
}

// clampToTemplate caps a run quota by the chart's resources.min/max the way
// the pod spec is clamped (podspec.EffectiveQuota), so run_quota tells the
// hub what the project really runs with: limits, the CPU request (max
// cpuShares in millicores), network (only where max.network allows it) and
// the idle timeout (not for always-running projects). The memory request
// and disk quota are the hub's (the pod derives its requests from the
// template's overcommit ratios).
func clampToTemplate(q cocalcQuota, r podtemplate.Resources) cocalcQuota {
	clamp := func(v, min, max float64) float64 {
		v = math.Max(v, min)
		if max > 0 {
			v = math.Min(v, max)
		}
		return v
	}
	q.CPULimit = clamp(q.CPULimit, r.Min.Cores, r.Max.Cores)
	q.MemoryLimit = clamp(q.MemoryLimit, float64(r.Min.MemoryMiB), float64(r.Max.MemoryMiB))
	q.CPURequest = clamp(q.CPURequest, float64(r.Min.CPUShares)/1000, float64(r.Max.CPUShares)/1000)
	q.Network = (q.Network || r.Min.Network) && r.Max.Network
	if !q.AlwaysRunning && q.IdleTimeout > 0 {
		q.IdleTimeout = clamp(q.IdleTimeout, float64(r.Min.IdleTimeoutSeconds), float64(r.Max.IdleTimeoutSeconds))
	}
	return q
}
