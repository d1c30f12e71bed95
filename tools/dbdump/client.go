package dbdump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client timeouts before the first byte; the whole fetch is bounded by the
// caller's context.
const (
	dialTimeout   = 10 * time.Second
	headerTimeout = 60 * time.Second
	// ConnectRetry is how long Fetch keeps trying to connect. A pod that has
	// just started (every backup Job's) can be refused for seconds until the
	// NetworkPolicy controller has admitted its new address: measured on the
	// kind tier (kube-router), the first connections of a new Job pod were
	// refused while one a few seconds later went through.
	ConnectRetry = 90 * time.Second
	maxBackoff   = 5 * time.Second
)

// Fetch asks the server at url (ending in DumpPath) for a dump and copies it
// to w. It returns the number of bytes copied and an error unless the
// server's StatusTrailer says the dump is complete: then w holds the whole
// dump. On an error w may hold part of one, which the caller must discard.
func Fetch(ctx context.Context, url, token string, w io.Writer) (int64, error) {
	if token == "" {
		return 0, fmt.Errorf("no dump token: %s is empty", TokenEnv)
	}
	client := &http.Client{Transport: &http.Transport{
		Proxy:                 nil, // the server pod, inside the cluster: never through a proxy
		DialContext:           (&net.Dialer{Timeout: dialTimeout}).DialContext,
		ResponseHeaderTimeout: headerTimeout,
		DisableCompression:    true,
	}}
	defer client.CloseIdleConnections()
	resp, err := connect(ctx, client, url, token)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("dump server %s answered %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, context.Cause(ctx))
		}
		return n, fmt.Errorf("dump from %s ended after %d bytes: %w", url, n, err)
	}
	switch status := resp.Trailer.Get(StatusTrailer); {
	case status == StatusOK:
		return n, nil
	case status == "":
		return n, fmt.Errorf("dump from %s ended after %d bytes without a status (the server stopped or the connection was cut)", url, n)
	default:
		return n, fmt.Errorf("dump from %s %s", url, status)
	}
}

// connect sends the dump request, again while no connection could be made
// at all (refused, unreachable, dial timeout) for up to ConnectRetry: nothing
// reached the server, so nothing runs twice. Any answer ends the retries.
func connect(ctx context.Context, client *http.Client, url, token string) (*http.Response, error) {
	deadline := time.Now().Add(ConnectRetry)
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return nil, fmt.Errorf("dump request to %s: %w", url, err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err == nil {
			return resp, nil
		}
		var op *net.OpError
		dialFailed := errors.As(err, &op) && op.Op == "dial"
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("dump request to %s: %w (attempt %d: %v)", url, context.Cause(ctx), attempt, err)
		case !dialFailed || time.Now().Add(backoff).After(deadline):
			return nil, fmt.Errorf("dump request to %s (attempt %d): %w", url, attempt, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dump request to %s: %w (attempt %d: %v)", url, context.Cause(ctx), attempt, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
