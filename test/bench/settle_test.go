package bench

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSettleWaitsForAQuietWindow(t *testing.T) {
	// Cumulative foreground counts at each scrape (leases, background,
	// always grow). With 10 ms windows and a limit of 5 requests a second,
	// only a window without a foreground request is quiet.
	for _, tc := range []struct {
		name   string
		counts []float64
		errAt  int
		quiet  bool
		scrape int // scrapes made
	}{
		{"busy then quiet", []float64{0, 100, 140, 140}, -1, true, 4},
		{"quiet at once", []float64{7, 7}, -1, true, 2},
		{"a failed scrape is not quiet", []float64{0, 0, 0, 0}, 1, true, 4},
		{"never quiet gives up", []float64{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200}, -1, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			scrape := func(context.Context) (RequestCounts, error) {
				i := min(n, len(tc.counts)-1)
				n++
				if i == tc.errAt {
					return nil, errors.New("scrape failed")
				}
				return RequestCounts{"POST pods": tc.counts[i], "PUT leases.coordination.k8s.io": float64(1000 * n)}, nil
			}
			_, quiet := settle(context.Background(), scrape, 10*time.Millisecond, 5, 150*time.Millisecond)
			if quiet != tc.quiet {
				t.Fatalf("quiet %v, want %v", quiet, tc.quiet)
			}
			if tc.scrape > 0 && n != tc.scrape {
				t.Errorf("%d scrapes, want %d", n, tc.scrape)
			}
		})
	}
}
