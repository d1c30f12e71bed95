// Package cli is the cocalc-k8s command line: `serve` (the controller and
// its HTTP API), `project start|stop|restart|touch|status|list` for admins,
// `check` (readiness checks for the chart's helm test) and `version`.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Exit codes scripts can rely on.
const (
	ExitOK          = 0 // success
	ExitFailed      = 1 // the operation failed (API error, project failed to start, ...)
	ExitUsage       = 2 // bad command line or input (unknown flag, invalid project ID or quota, bad template)
	ExitUnavailable = 3 // the orchestrator API or the cluster could not be reached
	ExitTimeout     = 4 // the operation or check timed out
)

const exitCodesHelp = `Exit codes:
  0  success
  1  the operation failed
  2  usage error or invalid input (flags, project ID, quota, template)
  3  the orchestrator API or the Kubernetes cluster is unreachable
  4  timed out`

// Version is set at build time with
// -ldflags "-X gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/cli.Version=v1.2.3".
var Version = "dev"

// exitError carries an exit code up to Execute.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErrorf(format string, a ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, a...))
}

// Execute runs the command line and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "error:", err)
	return exitCode(err)
}

// exitCode classifies an error.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if strings.HasPrefix(err.Error(), "unknown command") { // cobra's, untyped
		return ExitUsage
	}
	var apiErr *httpapi.Error
	switch {
	case errors.As(err, &apiErr):
		switch {
		case apiErr.StatusCode == 504:
			return ExitTimeout
		case apiErr.StatusCode == 503:
			return ExitUnavailable
		case apiErr.StatusCode >= 400 && apiErr.StatusCode < 500 && apiErr.StatusCode != 409:
			return ExitUsage
		}
		return ExitFailed
	case orchestrator.IsInvalidInput(err):
		return ExitUsage
	case errors.Is(err, orchestrator.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return ExitTimeout
	case isUnreachable(err):
		return ExitUnavailable
	}
	return ExitFailed
}

func isUnreachable(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr) || (errors.As(err, &opErr) && opErr.Op == "dial")
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var logFormat, logLevel string
	root := &cobra.Command{
		Use:   "cocalc-k8s",
		Short: "Run CoCalc projects as Kubernetes pods, one pod per project",
		Long: `cocalc-k8s is the CoCalc-on-Kubernetes orchestrator. It runs in the CoCalc
server pod ("serve"), creates one pod per CoCalc project from the chart's
project pod template, and reports project state from a watch-based cache.

Admins drive projects with "cocalc-k8s project ...", through the serve
process's HTTP API (default) or directly against the cluster (--kubeconfig).

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(stderr, logFormat, logLevel)
			if err != nil {
				return err
			}
			slog.SetDefault(logger)
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(ExitUsage, err) })
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log format: json or text")
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(newServeCmd(), newProjectCmd(stdout), newCheckCmd(stdout, stderr), newVersionCmd(stdout))
	return root
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, usageErrorf("--log-format %q: want json or text", format)
}

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %d argument(s), got %d (see --help)", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}

func parseID(s string) (project.ID, error) {
	id, err := project.Parse(s)
	if err != nil {
		return "", withCode(ExitUsage, err)
	}
	return id, nil
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of cocalc-k8s",
		Long:  "Print the version of cocalc-k8s, the Go version it was built with and, when known, the source revision.",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(stdout, "cocalc-k8s %s\n", versionString())
			return nil
		},
	}
}

func versionString() string {
	parts := []string{Version}
	if bi, ok := debug.ReadBuildInfo(); ok {
		parts = append(parts, bi.GoVersion)
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				parts = append(parts, "rev "+s.Value)
			}
		}
	}
	return strings.Join(parts, " ")
}
