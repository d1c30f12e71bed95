package cli

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// An HTTPS target with a self-signed certificate (the CoCalc server image's)
// fails verification unless --insecure-skip-tls-verify; with it, the status
// still decides.
func TestCheckHTTPSSelfSigned(t *testing.T) {
	alive := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/alive" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Write([]byte("alive: YES"))
	}))
	// The server's own log of refused handshakes must not go to the
	// standard logger, which the command under test redirects.
	alive.Config.ErrorLog = log.New(io.Discard, "", 0)
	alive.StartTLS()
	defer alive.Close()

	// Timeouts long enough for a TLS handshake under -race on a busy machine.
	code, _, errOut := run(t, "check", "--http", alive.URL+"/alive", "--timeout", "3s", "--interval", "50ms")
	if code != ExitTimeout || !strings.Contains(errOut, "certificate") {
		t.Fatalf("unverified certificate accepted: exit %d stderr %q", code, errOut)
	}
	code, out, errOut := run(t, "check", "--http", alive.URL+"/alive", "--insecure-skip-tls-verify", "--timeout", "5s")
	if code != 0 || !strings.Contains(out, "ok http") {
		t.Fatalf("insecure: exit %d out %q stderr %q", code, out, errOut)
	}
	// Skipping verification does not turn a failing answer into success.
	code, _, errOut = run(t, "check", "--http", alive.URL+"/healthcheck", "--insecure-skip-tls-verify", "--timeout", "3s", "--interval", "50ms")
	if code != ExitTimeout || !strings.Contains(errOut, "404") {
		t.Fatalf("404 accepted: exit %d stderr %q", code, errOut)
	}
}
