package bench

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Settling before each burst: a burst that follows the deletion of the
// previous row's pods (1,000 or 5,000 at once) shares the control plane
// with the clean-up the deletion set off (kwok, the scheduler's cache, the
// controllers), and the first burst of each run was slower than the rest
// for it. Each burst starts once the API server's foreground request rate
// (everything but heartbeats, leases and events) has stayed at or below
// settleRate for one settleWindow, or after settleMax.
const (
	settleWindow = 3 * time.Second
	settleRate   = 5.0 // requests a second
	settleMax    = 2 * time.Minute
)

// settle waits until the foreground rate measured by scrape over one
// window is at most rate, or until max has passed (or ctx ends); it
// returns how long it waited and whether the cluster was quiet.
func settle(ctx context.Context, scrape func(context.Context) (RequestCounts, error), window time.Duration, rate float64, max time.Duration) (time.Duration, bool) {
	began := time.Now()
	prev, err := scrape(ctx)
	for time.Since(began) < max {
		select {
		case <-ctx.Done():
			return time.Since(began), false
		case <-time.After(window):
		}
		cur, cerr := scrape(ctx)
		if err == nil && cerr == nil && cur.Sub(prev).Foreground()/window.Seconds() <= rate {
			return time.Since(began), true
		}
		prev, err = cur, cerr
	}
	return time.Since(began), false
}

// settleBefore settles the cluster before a burst and logs how long it took.
func settleBefore(ctx context.Context, cs kubernetes.Interface, log *slog.Logger) {
	took, quiet := settle(ctx, func(ctx context.Context) (RequestCounts, error) { return ScrapeRequests(ctx, cs) },
		settleWindow, settleRate, settleMax)
	log.Info("settled before the burst", "waited", took.Round(time.Second), "quiet", quiet)
}
