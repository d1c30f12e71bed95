// Package testwait is the tests' one way to wait for a condition that
// another goroutine or process makes true.
package testwait

import (
	"testing"
	"time"
)

// Limit bounds every wait: a liveness limit, never a speed claim.
const Limit = 20 * time.Second

// Eventually polls cond every 10 ms until it holds, and fails the test
// (naming what) if it does not within Limit.
//
//	testwait.Eventually(t, "state running", func() bool { return st() == "running" })
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
