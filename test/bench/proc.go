package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is a process's resident memory and cumulative CPU time.
// AnonBytes is the anonymous part of RSSBytes (RssAnon: heap, stacks);
// the rest is file-backed (RssFile: the pages of the executable it ran,
// clean, shared and reclaimable by the kernel; about 25 MiB of
// cocalc-k8s serve's RSS whatever the number of pods).
type ProcSample struct {
	RSSBytes  int64
	AnonBytes int64
	CPU       time.Duration
}

// ReadProc samples /proc/<pid>/status (VmRSS, RssAnon) and
// /proc/<pid>/stat (utime+stime).
func ReadProc(pid int) (ProcSample, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("read process status: %w", err)
	}
	var s ProcSample
	for _, line := range strings.Split(string(status), "\n") {
		for key, dst := range map[string]*int64{"VmRSS:": &s.RSSBytes, "RssAnon:": &s.AnonBytes} {
			if rest, ok := strings.CutPrefix(line, key); ok {
				f := strings.Fields(rest)
				if len(f) == 0 {
					return ProcSample{}, fmt.Errorf("parse %q", line)
				}
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return ProcSample{}, fmt.Errorf("parse %s %q: %w", key, line, err)
				}
				*dst = kb * 1024
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("read process stat: %w", err)
	}
	cpu, err := parseStatCPU(string(stat))
	if err != nil {
		return ProcSample{}, err
	}
	s.CPU = cpu
	return s, nil
}

// parseStatCPU returns utime+stime from a /proc/<pid>/stat line. The
// command name (field 2) may contain spaces, so fields are counted after
// its closing parenthesis.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// After ")" come state (field 3) ... utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat %q", stat)
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc stat %q: %w", stat, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// SelfCPU is this process's user+system CPU time so far.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ChildCPU is the CPU time of a finished child process (rusage of the
// child, so a kubectl run is charged exactly).
func ChildCPU(ps *os.ProcessState) time.Duration {
	if ps == nil {
		return 0
	}
	return ps.UserTime() + ps.SystemTime()
}

// GoHeap is a Go process's heap as its own runtime reports it
// (runtime.MemStats through the Prometheus Go collector).
type GoHeap struct {
	// InUse is the heap's spans holding objects (go_memstats_heap_inuse_bytes).
	InUse int64
	// Retained is heap the runtime has freed and not yet returned to the
	// operating system, still counted in RSS until it does
	// (go_memstats_heap_idle_bytes − go_memstats_heap_released_bytes).
	Retained int64
}

// ScrapeGoHeap reads GoHeap from a /metrics endpoint.
func ScrapeGoHeap(ctx context.Context, client *http.Client, url string) (GoHeap, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return GoHeap{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return GoHeap{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return GoHeap{}, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return ParseGoHeap(resp.Body)
}

// ParseGoHeap reads GoHeap from Prometheus text exposition.
func ParseGoHeap(r io.Reader) (GoHeap, error) {
	want := map[string]float64{"go_memstats_heap_inuse_bytes": -1, "go_memstats_heap_idle_bytes": -1, "go_memstats_heap_released_bytes": -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if _, ok := want[f[0]]; !ok {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return GoHeap{}, fmt.Errorf("parse %s: %w", f[0], err)
		}
		want[f[0]] = v
	}
	if err := sc.Err(); err != nil {
		return GoHeap{}, fmt.Errorf("read metrics: %w", err)
	}
	for name, v := range want {
		if v < 0 {
			return GoHeap{}, fmt.Errorf("metrics lack %s", name)
		}
	}
	return GoHeap{
		InUse:    int64(want["go_memstats_heap_inuse_bytes"]),
		Retained: int64(want["go_memstats_heap_idle_bytes"] - want["go_memstats_heap_released_bytes"]),
	}, nil
}
