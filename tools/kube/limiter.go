package kube

import (
	"context"

	"k8s.io/client-go/util/flowcontrol"
)

// Limiter is the client-side rate limit (QPS, burst) of the orchestrator's
// API client, shared by client-go (rest.Config.RateLimiter) and Client's
// own calls. Client takes a write's token itself, bounded only by the
// operation's deadline, and only then starts the attempt's timeout
// (Config.WriteTimeout), so the whole timeout is the server's to answer.
//
// Without it, client-go waits for the token inside the attempt: in a deep
// burst (5,000 starts at 50 QPS) a create got its token with a second of
// its 70 s left, the server's answer came too late, and the create sent
// again was answered AlreadyExists (1.09 create requests per start).
type Limiter struct {
	flowcontrol.RateLimiter
}

// NewLimiter returns a token bucket of qps, refilled to burst.
func NewLimiter(qps float32, burst int) *Limiter {
	return &Limiter{RateLimiter: flowcontrol.NewTokenBucketRateLimiter(qps, burst)}
}

type prepaidKey struct{}

// Wait takes a token unless ctx carries one already taken for this request
// (prepaid).
func (l *Limiter) Wait(ctx context.Context) error {
	if ctx.Value(prepaidKey{}) != nil {
		return nil
	}
	return l.RateLimiter.Wait(ctx)
}

// prepaid waits for a token within ctx and returns ctx marked so that the
// request made with it (or a context derived from it) does not wait again.
func (l *Limiter) prepaid(ctx context.Context) (context.Context, error) {
	if err := l.RateLimiter.Wait(ctx); err != nil {
		return nil, err
	}
	return context.WithValue(ctx, prepaidKey{}, true), nil
}
