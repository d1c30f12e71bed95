package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// RequestCounts is the API server's apiserver_request_total, summed per
// "verb resource" key ("GET pods", "LIST pods", "POST pods", "GET " for
// non-resource paths such as discovery). Resources of a named API group
// carry it ("POST events.events.k8s.io", the scheduler's Events, apart
// from the core "POST events" the orchestrator writes).
type RequestCounts map[string]float64

// Total sums every counter.
func (c RequestCounts) Total() float64 {
	var t float64
	for _, v := range c {
		t += v
	}
	return t
}

// Sub returns c - before, key by key.
func (c RequestCounts) Sub(before RequestCounts) RequestCounts {
	out := RequestCounts{}
	for k, v := range c {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// background are resources the control plane and kwok write on their own
// (heartbeats, leases, events), whatever the method under test does.
var background = map[string]bool{"leases.coordination.k8s.io": true, "nodes": true, "nodes/status": true,
	"events": true, "events.events.k8s.io": true}

// Foreground sums every counter except the background resources'.
func (c RequestCounts) Foreground() float64 {
	var t float64
	for k, v := range c {
		if _, r, _ := strings.Cut(k, " "); !background[r] {
			t += v
		}
	}
	return t
}

// Writes sums the create, update and patch requests on resource.
func (c RequestCounts) Writes(resource string) float64 {
	return c["POST "+resource] + c["PUT "+resource] + c["PATCH "+resource]
}

// Resource sums the counters of one resource (every verb).
func (c RequestCounts) Resource(resource string) float64 {
	var t float64
	for k, v := range c {
		if _, r, _ := strings.Cut(k, " "); r == resource {
			t += v
		}
	}
	return t
}

// ScrapeRequests reads /metrics from the API server (the caller's
// credentials must allow it; the api tier's admin kubeconfig does).
func ScrapeRequests(ctx context.Context, cs kubernetes.Interface) (RequestCounts, error) {
	body, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape API server /metrics: %w", err)
	}
	return ParseRequestCounts(bytes.NewReader(body))
}

// ParseRequestCounts extracts apiserver_request_total from Prometheus text
// exposition.
func ParseRequestCounts(r io.Reader) (RequestCounts, error) {
	return parseRequests(r, false)
}

// ScrapeRequestsByCode is ScrapeRequests with the response code last in
// every key ("POST pods 201", "POST pods 409"): a write that timed out on
// the client and was retried shows as a second POST, answered 409.
func ScrapeRequestsByCode(ctx context.Context, cs kubernetes.Interface) (RequestCounts, error) {
	body, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape API server /metrics: %w", err)
	}
	return parseRequests(bytes.NewReader(body), true)
}

// Succeeded sums the 2xx answers to verb on resource in counts keyed by
// code (ScrapeRequestsByCode).
func (c RequestCounts) Succeeded(verb, resource string) float64 {
	var t float64
	for k, v := range c {
		rest, ok := strings.CutPrefix(k, verb+" "+resource+" ")
		if ok && len(rest) == 3 && rest[0] == '2' {
			t += v
		}
	}
	return t
}

func parseRequests(r io.Reader, byCode bool) (RequestCounts, error) {
	const name = "apiserver_request_total{"
	out := RequestCounts{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		end := strings.LastIndex(line, "}")
		if end < 0 {
			return nil, fmt.Errorf("malformed metric line %q", line)
		}
		labels := parseLabels(line[len(name):end])
		fields := strings.Fields(line[end+1:])
		if len(fields) == 0 {
			return nil, fmt.Errorf("metric line without value %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metric value in %q: %w", line, err)
		}
		resource := labels["resource"]
		if g := labels["group"]; g != "" {
			resource += "." + g
		}
		if sub := labels["subresource"]; sub != "" {
			resource += "/" + sub
		}
		key := labels["verb"] + " " + resource
		if byCode {
			key += " " + labels["code"]
		}
		out[key] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return out, nil
}

// parseLabels splits `a="x",b="y"`; label values here never contain
// quotes or commas, which keeps this simple.
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		out[k] = strings.Trim(v, `"`)
	}
	return out
}

// WatchLists is the API server's count of completed watch-list initial
// syncs (apiserver_watch_list_duration_seconds_count) of resource: a
// client that streams its initial state (WatchList) instead of listing.
func WatchLists(ctx context.Context, cs kubernetes.Interface, resource string) (float64, error) {
	body, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("scrape API server /metrics: %w", err)
	}
	return parseWatchLists(bytes.NewReader(body), resource)
}

func parseWatchLists(r io.Reader, resource string) (float64, error) {
	const name = "apiserver_watch_list_duration_seconds_count{"
	var total float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		end := strings.LastIndex(line, "}")
		if !strings.HasPrefix(line, name) || end < 0 {
			continue
		}
		if parseLabels(line[len(name):end])["resource"] != resource {
			continue
		}
		fields := strings.Fields(line[end+1:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric value in %q: %w", line, err)
		}
		total += v
	}
	return total, sc.Err()
}
