package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Client calls the API. It is the orchestrator.Projects of the front-ends
// that run apart from the orchestrator (smc-compute, the admin CLI).
type Client struct {
	// BaseURL is e.g. http://127.0.0.1:8470.
	BaseURL string
	HTTP    *http.Client
}

var _ orchestrator.Projects = (*Client)(nil)

// Error is a non-2xx answer from the API.
type Error struct {
	StatusCode int
	Message    string
	Status     *orchestrator.ProjectStatus
}

func (e *Error) Error() string { return fmt.Sprintf("API answered %d: %s", e.StatusCode, e.Message) }

// do calls the API. A request answered 429 (the API's operations in
// progress are at their bound, Options.MaxInFlight) is sent again until ctx
// ends: after its Retry-After, doubling with each further 429 up to
// maxRetryAfter, with jitter, so thousands of waiting callers do not all
// come back in the same second (the API keeps seconds of pod creates in
// progress, so a later retry does not slow the burst).
func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}
	for refused := 0; ; refused++ {
		err, retryAfter := c.once(ctx, method, path, data, body != nil, out)
		if retryAfter == 0 {
			return err
		}
		t := time.NewTimer(wait.Jitter(min(retryAfter<<min(refused, 4), maxRetryAfter), 0.5))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up waiting to retry: %w)", err, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// maxRetryAfter bounds the wait before a request answered 429 is sent again.
const maxRetryAfter = 8 * time.Second

// once makes one request; retryAfter > 0 when the answer was 429.
func (c *Client) once(ctx context.Context, method, path string, data []byte, hasBody bool, out any) (err error, retryAfter time.Duration) {
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err), 0
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("call %s %s: %w", method, path, err), 0
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response of %s %s: %w", method, path, err), 0
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(answer, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(answer))
		}
		apiErr := &Error{StatusCode: resp.StatusCode, Message: e.Error, Status: e.Status}
		if resp.StatusCode == http.StatusTooManyRequests {
			wait := time.Second
			if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n >= 0 {
				wait = max(time.Duration(n)*time.Second, 100*time.Millisecond)
			}
			return apiErr, wait
		}
		return apiErr, 0
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("decode response of %s %s: %w", method, path, err), 0
	}
	return nil, 0
}

func (c *Client) action(ctx context.Context, id project.ID, action string, body any) (orchestrator.ProjectStatus, error) {
	var st orchestrator.ProjectStatus
	err := c.do(ctx, http.MethodPost, "/v1/projects/"+id.String()+"/"+action, body, &st)
	return st, err
}

// Start starts a project and returns its status once running.
func (c *Client) Start(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	return c.action(ctx, id, "start", req)
}

// Stop stops a project.
func (c *Client) Stop(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	return c.action(ctx, id, "stop", nil)
}

// Restart restarts a project.
func (c *Client) Restart(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	return c.action(ctx, id, "restart", req)
}

// Touch records activity.
func (c *Client) Touch(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	return c.action(ctx, id, "touch", nil)
}

// Status returns a project's status.
func (c *Client) Status(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	var st orchestrator.ProjectStatus
	err := c.do(ctx, http.MethodGet, "/v1/projects/"+id.String(), nil, &st)
	return st, err
}

// List returns every project with a pod.
func (c *Client) List(ctx context.Context) ([]orchestrator.ProjectStatus, error) {
	var l ListResponse
	err := c.do(ctx, http.MethodGet, "/v1/projects", nil, &l)
	return l.Projects, err
}
