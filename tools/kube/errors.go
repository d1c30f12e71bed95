package kube

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// IsTransient reports whether a failed API call may succeed if repeated
// unchanged: server overload, timeouts, internal errors and broken
// connections. Permanent errors (Forbidden, Invalid, NotFound,
// AlreadyExists, Conflict, BadRequest, Unauthorized) are not retried: the
// same request would fail the same way, and retrying hides the cause.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	switch {
	case apierrors.IsTooManyRequests(err),
		apierrors.IsServerTimeout(err),
		apierrors.IsTimeout(err),
		apierrors.IsServiceUnavailable(err),
		apierrors.IsInternalError(err),
		apierrors.IsUnexpectedServerError(err):
		return true
	case errors.Is(err, context.DeadlineExceeded): // one call's own timeout
		return true
	case utilnet.IsConnectionReset(err), utilnet.IsConnectionRefused(err), utilnet.IsProbableEOF(err),
		errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code == 502 || code == 503 || code == 504
	}
	return false
}

// clientThrottled is how client-go (rest.Request.tryThrottle) reports that
// its client-side rate limiter gave up: the wait for a token would outlast
// the request's context. client-go exports no error value for it.
const clientThrottled = "client rate limiter Wait returned an error"

func isClientThrottled(err error) bool {
	return err != nil && strings.Contains(err.Error(), clientThrottled)
}
