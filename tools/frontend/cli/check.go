package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func newCheckCmd(stdout, stderr io.Writer) *cobra.Command {
	var tcp, urls []string
	var timeout, interval time.Duration
	var insecure bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Wait until TCP and HTTP targets answer (for helm test)",
		Long: `Retry until every target answers, or fail after --timeout.

A --tcp target answers when a TCP connection opens; an --http target when a
GET returns a 2xx or 3xx status (redirects are not followed). HTTPS targets
are verified unless --insecure-skip-tls-verify (for a server's self-signed
certificate). Used by the chart's "helm test" pod.
Exit code 0 when all answered, 4 on timeout, 2 on bad flags.`,
		Example: `  cocalc-k8s check --tcp cocalc-server:80 --http http://cocalc-server:8471/readyz --timeout 60s`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(tcp) == 0 && len(urls) == 0 {
				return usageErrorf("check: give at least one --tcp or --http target")
			}
			if timeout <= 0 || interval <= 0 {
				return usageErrorf("check: --timeout and --interval must be > 0")
			}
			for _, t := range tcp {
				if _, _, err := net.SplitHostPort(t); err != nil {
					return usageErrorf("--tcp %q: %v", t, err)
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			for _, t := range tcp {
				if err := retry(ctx, interval, stderr, "tcp "+t, func(ctx context.Context) error { return checkTCP(ctx, t) }); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "ok tcp %s\n", t)
			}
			client := httpCheckClient(insecure)
			for _, u := range urls {
				if err := retry(ctx, interval, stderr, "http "+u, func(ctx context.Context) error { return checkHTTP(ctx, client, u) }); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "ok http %s\n", u)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&tcp, "tcp", nil, "host:port that must accept a TCP connection (repeatable)")
	cmd.Flags().StringArrayVar(&urls, "http", nil, "URL that must answer GET with 2xx/3xx (repeatable)")
	cmd.Flags().BoolVar(&insecure, "insecure-skip-tls-verify", false, "do not verify the certificates of --http https:// targets")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "give up after this long")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "pause between attempts")
	return cmd
}

// retry calls try until it succeeds or ctx ends. The error reported at the
// end is the last one an attempt finished with by itself: an attempt cut
// short by the deadline says nothing about the target.
func retry(ctx context.Context, interval time.Duration, log io.Writer, what string, try func(context.Context) error) error {
	var last error
	for {
		err := try(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		fmt.Fprintf(log, "waiting for %s: %v\n", what, err)
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return withCode(ExitTimeout, fmt.Errorf("%s did not answer: %w (last error: %v)", what, context.Cause(ctx), last))
		case <-t.C:
		}
	}
}

func checkTCP(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// httpCheckClient never follows redirects (a 3xx answers); with insecure it
// accepts any server certificate.
func httpCheckClient(insecure bool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opted in by flag: self-signed server certificates
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func checkHTTP(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 400 {
		return errors.New("status " + resp.Status)
	}
	return nil
}
