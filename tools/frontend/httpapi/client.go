package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

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

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("call %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response of %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &Error{StatusCode: resp.StatusCode, Message: e.Error, Status: e.Status}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response of %s %s: %w", method, path, err)
	}
	return nil
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
