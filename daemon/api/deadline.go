package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// The caller's deadline (docs/daemon.md, "Deadlines"): an execute may
// carry the time its caller has left, which the daemon applies to the
// request as its context's deadline. It travels as whole milliseconds
// counted from when the daemon receives the request, not as a point in
// time, because the daemon's clock and the caller's may differ: on the
// execute channel as the request frame's "deadline_ms" (to daemons whose
// upgrade lists MuxFeatureDeadline), over HTTP as HeaderDeadline.
const (
	// HeaderDeadline carries the time left of an HTTP execute or stream,
	// in milliseconds; 0 or less: the caller's time is already up.
	HeaderDeadline = "Ociapp-Deadline-Ms"
	// MuxFeatureDeadline, in MuxFeaturesHeader, says the daemon applies a
	// request frame's "deadline_ms".
	MuxFeatureDeadline = "deadline"
)

// DeadlinePassed is the time left of a request whose caller's time was
// already up when it was sent ("deadline_ms" of 0 or less). The daemon
// answers it request_timeout without running it.
const DeadlinePassed time.Duration = -1

// maxDeadlineMS bounds the milliseconds read from the wire to what a
// Duration holds: absurd values mean no deadline anyone will see.
const maxDeadlineMS = math.MaxInt64 / int64(time.Millisecond)

// TimeLeft returns the time until ctx's deadline: 0 when ctx has none,
// DeadlinePassed when it has passed.
func TimeLeft(ctx context.Context) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	if left := time.Until(dl); left > 0 {
		return left
	}
	return DeadlinePassed
}

// DeadlineMillis is how the time left d travels: whole milliseconds,
// rounded up so that a request with 0.4 ms left is not sent as already
// late, and 0 once no time is left.
func DeadlineMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// deadlineOfMillis is the time left that ms milliseconds on the wire
// stand for: DeadlinePassed for 0 or less, at most what a Duration holds.
func deadlineOfMillis(ms int64) time.Duration {
	if ms <= 0 {
		return DeadlinePassed
	}
	return time.Duration(min(ms, maxDeadlineMS)) * time.Millisecond
}

// FormatDeadlineHeader is HeaderDeadline's value for the time left d.
func FormatDeadlineHeader(d time.Duration) string {
	return strconv.FormatInt(DeadlineMillis(d), 10)
}

// ParseDeadlineHeader reads HeaderDeadline from h: 0 when absent, else
// the time left (DeadlinePassed for 0 or less; too large a value is
// clamped). A value that is not a decimal integer is an error.
func ParseDeadlineHeader(h http.Header) (time.Duration, error) {
	v := h.Get(HeaderDeadline)
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%s: %q is not a whole number of milliseconds", HeaderDeadline, v)
	}
	// Out of range, ParseInt returns the bound in the value's direction.
	return deadlineOfMillis(ms), nil
}
