// Package probe drives the stand-in images from a test: it asks a stand-in
// pod, through the API server's pod proxy, to open a TCP connection from
// inside the pod (GET /dial), so NetworkPolicies are checked by real
// connections without exec and without routing the test host into the
// pod network.
package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"

	"gitlab.com/resurgo/cocalc-kubernetes/test/standins/standin"
)

// Dial asks the stand-in pod ns/pod, serving on port, to connect to addr
// (host:port) within timeout. An error means the question could not be
// asked (pod not serving, proxy failure); a refused or timed-out connection
// is a result with Connected false.
func Dial(ctx context.Context, client kubernetes.Interface, ns, pod string, port int, addr string, timeout time.Duration) (standin.DialResult, error) {
	var res standin.DialResult
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return res, fmt.Errorf("addr %q: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	raw, err := client.CoreV1().Pods(ns).ProxyGet("http", pod, strconv.Itoa(port), "/dial",
		map[string]string{"addr": addr, "timeout": timeout.String()}).DoRaw(ctx)
	if err != nil {
		return res, fmt.Errorf("dial %s from pod %s/%s: %w", addr, ns, pod, err)
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("dial %s from pod %s/%s: answer %q: %w", addr, ns, pod, raw, err)
	}
	return res, nil
}

// Get fetches path from the stand-in pod ns/pod on port through the pod
// proxy.
func Get(ctx context.Context, client kubernetes.Interface, ns, pod string, port int, path string, params map[string]string) ([]byte, error) {
	raw, err := client.CoreV1().Pods(ns).ProxyGet("http", pod, strconv.Itoa(port), path, params).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("GET %s from pod %s/%s:%d: %w", path, ns, pod, port, err)
	}
	return raw, nil
}
