// Command cocalc-dbdump streams pg_dump of the server pod's embedded
// PostgreSQL to the chart's database backup (package dbdump says how).
//
//	cocalc-dbdump serve [-listen :5480] [-max-duration 6h] [-pg-dump pg_dump]
//	    in the server pod, beside the database: libpq's PG* variables say
//	    where it is, COCALC_DUMP_TOKEN is the shared token.
//	cocalc-dbdump fetch -url http://<service>:<port>/dump [-timeout 6h] > db.dump
//	    in the backup Job: the dump on standard output, exit 1 unless it is
//	    complete.
//
// Both are in the backup image (tools/images/backup).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/dbdump"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cocalc-dbdump:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: cocalc-dbdump serve|fetch [flags]")
	}
	fs := flag.NewFlagSet("cocalc-dbdump "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch args[0] {
	case "serve":
		listen := fs.String("listen", ":5480", "address to listen on")
		maxDuration := fs.Duration("max-duration", 6*time.Hour, "a dump running longer is stopped and reported failed")
		pgDump := fs.String("pg-dump", "pg_dump", "the pg_dump program")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return serve(ctx, *listen, dbdump.Config{
			Token:       os.Getenv(dbdump.TokenEnv),
			Command:     []string{*pgDump, "--format=custom", "--no-password"},
			MaxDuration: *maxDuration,
			Log:         slog.New(slog.NewJSONHandler(stderr, nil)),
		})
	case "fetch":
		url := fs.String("url", "", "the dump server's URL, http://<host>:<port>"+dbdump.DumpPath)
		timeout := fs.Duration("timeout", 6*time.Hour, "give up after this long")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *url == "" {
			return errors.New("fetch: -url is required")
		}
		ctx, cancel := context.WithTimeoutCause(ctx, *timeout, fmt.Errorf("no complete dump within -timeout %v", *timeout))
		defer cancel()
		_, err := dbdump.Fetch(ctx, *url, os.Getenv(dbdump.TokenEnv), stdout)
		return err
	default:
		return fmt.Errorf("unknown command %q: serve or fetch", args[0])
	}
}

// serve runs the dump server until ctx ends; a dump still running then gets
// a few seconds, then its pg_dump is killed.
func serve(ctx context.Context, listen string, cfg dbdump.Config) error {
	s, err := dbdump.NewServer(cfg)
	if err != nil {
		return err
	}
	if p := s.TokenProblem(); p != "" {
		// Keep running: every dump request is answered 503 with this reason,
		// so the backup Job fails and says why, and the server pod stays Ready.
		cfg.Log.Error("dumps are refused until the token is set", "reason", p)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	cfg.Log.Info("serving dumps", "listen", ln.Addr().String(), "max_duration", cfg.MaxDuration.String())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		_ = srv.Close()
	}
	return nil
}
