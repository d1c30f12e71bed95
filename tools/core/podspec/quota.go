package podspec

import (
	"errors"
	"fmt"
	"math"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

// ErrInvalidQuota is wrapped by errors about a start request's quota.
var ErrInvalidQuota = errors.New("invalid quota")

// Absolute sanity bounds, applied even when the template sets no maximum, so
// that arbitrary input can never overflow the resource arithmetic.
const (
	maxCores       = 4096
	maxMemoryMiB   = 64 << 20 // 64 TiB
	maxCPUShares   = maxCores * 1000
	maxGPUs        = 1024
	maxIdleTimeout = 10 * 365 * 24 * 3600
)

// EffectiveQuota applies the template's defaults to the fields a request
// leaves at zero and clamps the result to the template's [Min, Max]. It
// refuses negative, NaN, infinite and absurdly large values instead of
// silently clamping them: they are caller bugs, not wishes.
func EffectiveQuota(r podtemplate.Resources, q podtemplate.Quota) (podtemplate.Quota, error) {
	var errs []error
	if math.IsNaN(q.Cores) || math.IsInf(q.Cores, 0) || q.Cores < 0 || q.Cores > maxCores {
		errs = append(errs, fmt.Errorf("%w: cores %v must be in [0, %d]", ErrInvalidQuota, q.Cores, maxCores))
	}
	checkInt := func(name string, v, max int64) {
		if v < 0 || v > max {
			errs = append(errs, fmt.Errorf("%w: %s %d must be in [0, %d]", ErrInvalidQuota, name, v, max))
		}
	}
	checkInt("memoryMiB", q.MemoryMiB, maxMemoryMiB)
	checkInt("cpuShares", q.CPUShares, maxCPUShares)
	checkInt("gpus", q.GPUs, maxGPUs)
	checkInt("idleTimeoutSeconds", q.IdleTimeoutSeconds, maxIdleTimeout)
	if err := errors.Join(errs...); err != nil {
		return podtemplate.Quota{}, err
	}

	d := r.Default
	if q.Cores == 0 {
		q.Cores = d.Cores
	}
	if q.MemoryMiB == 0 {
		q.MemoryMiB = d.MemoryMiB
	}
	if q.CPUShares == 0 {
		q.CPUShares = d.CPUShares
	}
	if q.GPUs == 0 {
		q.GPUs = d.GPUs
	}
	if q.IdleTimeoutSeconds == 0 {
		q.IdleTimeoutSeconds = d.IdleTimeoutSeconds
	}
	// A bool cannot say "unset": network is on if the request, the default
	// or the minimum turns it on, and only if the maximum allows it. Unlike
	// the numbers, a false maximum is a cap (no internet for any project):
	// the chart always states it, and a missing one must fail closed.
	q.Network = (q.Network || d.Network || r.Min.Network) && r.Max.Network

	q.Cores = clampFloat(q.Cores, r.Min.Cores, r.Max.Cores)
	q.MemoryMiB = clampInt(q.MemoryMiB, r.Min.MemoryMiB, r.Max.MemoryMiB)
	q.CPUShares = clampInt(q.CPUShares, r.Min.CPUShares, r.Max.CPUShares)
	q.GPUs = clampInt(q.GPUs, r.Min.GPUs, r.Max.GPUs)
	if q.IdleTimeoutSeconds > 0 { // 0 = never idle-stopped; not raised by Min
		q.IdleTimeoutSeconds = clampInt(q.IdleTimeoutSeconds, r.Min.IdleTimeoutSeconds, r.Max.IdleTimeoutSeconds)
	}
	if q.GPUs > 0 && r.GPUResourceName == "" {
		return podtemplate.Quota{}, fmt.Errorf("%w: %d GPUs requested but the template names no GPU resource", ErrInvalidQuota, q.GPUs)
	}
	// The template guarantees Default.Cores/MemoryMiB > 0, but a Max below
	// the smallest schedulable unit would still produce an unusable pod.
	if q.Cores < 0.001 || q.MemoryMiB < 1 {
		return podtemplate.Quota{}, fmt.Errorf("%w: effective cores %v / memoryMiB %d too small", ErrInvalidQuota, q.Cores, q.MemoryMiB)
	}
	return q, nil
}

func clampFloat(v, min, max float64) float64 {
	if v < min {
		v = min
	}
	if max > 0 && v > max {
		v = max
	}
	return v
}

func clampInt(v, min, max int64) int64 {
	if v < min {
		v = min
	}
	if max > 0 && v > max {
		v = max
	}
	return v
}
