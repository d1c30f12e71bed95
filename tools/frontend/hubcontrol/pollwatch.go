package hubcontrol

import (
	"context"
	"time"
)

// PollWatch turns a cheap List (e.g. over an informer cache) into a change
// stream for orchestrators without a subscription API: every interval it
// lists, and sends the status of each project whose status differs from the
// previous round, plus Opened for projects that disappeared. The first round
// sends everything. The channel closes when ctx ends. List errors skip a
// round (the next successful one catches up).
func PollWatch(ctx context.Context, list func(context.Context) ([]Status, error), interval time.Duration) <-chan Status {
	ch := make(chan Status, 64)
	go func() {
		defer close(ch)
		prev := map[string]Status{}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			cur, err := list(ctx)
			if err == nil {
				seen := make(map[string]Status, len(cur))
				for _, s := range cur {
					seen[s.ProjectID] = s
					if old, ok := prev[s.ProjectID]; !ok || !sameStatus(old, s) {
						if !send(ctx, ch, s) {
							return
						}
					}
				}
				for id := range prev {
					if _, ok := seen[id]; !ok {
						if !send(ctx, ch, Status{ProjectID: id, State: Opened}) {
							return
						}
					}
				}
				prev = seen
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ch
}

func sameStatus(a, b Status) bool {
	return a.State == b.State && a.IP == b.IP && a.Error == b.Error && a.StartedAt.Equal(b.StartedAt)
}

func send(ctx context.Context, ch chan<- Status, s Status) bool {
	select {
	case ch <- s:
		return true
	case <-ctx.Done():
		return false
	}
}
