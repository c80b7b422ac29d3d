package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/runtime"
)

// callerDeadline is the cause of a request context whose caller's deadline
// passed (api.HeaderDeadline, a request frame's "deadline_ms"), telling it
// apart from a cancellation; left is the time the caller had when the
// daemon received the request.
type callerDeadline struct {
	left time.Duration
}

func (c *callerDeadline) Error() string {
	return fmt.Sprintf("the caller's deadline passed, %v after the daemon received the request", c.left)
}

// withCallerDeadline bounds ctx, whose cancel is cancel, by left, the time
// the request's caller has (none when it is not positive; a time already
// up is answered before the request runs). The runtime's request timeout
// still bounds the request within it: the earlier one ends it.
func withCallerDeadline(ctx context.Context, cancel context.CancelFunc, left time.Duration) (context.Context, context.CancelFunc) {
	if left <= 0 {
		return ctx, cancel
	}
	ctx, stop := context.WithTimeoutCause(ctx, left, &callerDeadline{left: left})
	return ctx, func() {
		stop()
		cancel()
	}
}

// deadlinePassed returns the caller's deadline that ended ctx, or nil.
func deadlinePassed(ctx context.Context) *callerDeadline {
	var cd *callerDeadline
	if errors.As(context.Cause(ctx), &cd) {
		return cd
	}
	return nil
}

// deadlineError is the answer to a request whose caller's deadline passed,
// left after the daemon received it (api.DeadlinePassed: it was up
// already, and the request did not run): request_timeout, as for the
// daemon's own request timeout, marked as the caller's.
func deadlineError(left time.Duration) *api.Error {
	e := &api.Error{Code: api.CodeRequestTimeout, CallerDeadline: true}
	if left > 0 {
		e.Timeout = left
		e.Message = fmt.Sprintf("the caller's deadline passed: the request had %v left when the daemon received it", left)
	} else {
		e.Message = "the caller's deadline had passed when the daemon received the request; it did not run"
	}
	return e
}

// runError is the answer to err, the runtime's error for a request run
// under ctx: the caller's deadline when that is what ended it, else the
// error's own (logged when the daemon cannot classify it).
func (s *Server) runError(ctx context.Context, err error, what string) *api.Error {
	// The runtime returns the context's error when the caller's context
	// ends first; its own request timeout is a *RequestTimeoutError.
	if cd := deadlinePassed(ctx); cd != nil && runtime.Classify(err) == runtime.KindDeadline {
		return deadlineError(cd.left)
	}
	e := api.FromError(err)
	if e.Code == api.CodeInternal {
		s.cfg.log.Error("execute failed", "artifact", what, "err", boundedErr(err))
	}
	return e
}

// callerContext applies the time left an HTTP execute or stream carries
// (api.HeaderDeadline) to its context, from when its headers arrived.
// When ok is false the request has been answered: a malformed header, or
// a time already up, which is answered without running the request.
func (s *Server) callerContext(w http.ResponseWriter, r *http.Request, media string) (ctx context.Context, cancel context.CancelFunc, ok bool) {
	left, err := api.ParseDeadlineHeader(r.Header)
	if err != nil {
		writeError(w, media, &api.Error{Code: api.CodeBadRequest, Message: err.Error()})
		return nil, nil, false
	}
	if left < 0 {
		writeError(w, media, deadlineError(left))
		return nil, nil, false
	}
	ctx, cancel = withCallerDeadline(r.Context(), func() {}, left)
	return ctx, cancel, true
}
