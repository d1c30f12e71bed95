package e2e

import (
	"context"
	"time"
)

// contextWithTimeout is for clean-ups that run after the test's context
// ended; the timer is released when it fires.
func contextWithTimeout(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	time.AfterFunc(d, cancel)
	return ctx
}
