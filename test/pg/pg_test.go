package pg

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartQueryRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := Start(t)
	url := s.CreateDatabase(ctx, "probe")
	query := func() int {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT 40 + 2").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if query() != 42 {
		t.Fatal("wrong answer")
	}
	s.Stop()
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Fatal("server still accepts connections after Stop")
	}
	s.Restart()
	if query() != 42 {
		t.Fatal("wrong answer after restart")
	}
}
