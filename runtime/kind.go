package runtime

import (
	"context"
	"errors"

	"github.com/ociapp/ociapp/protocol"
)

// Kind is the class of an error returned by the runtime. It is the one
// classification that every boundary derives from: the exit statuses of
// ociapp-runtime, the runtime's failure counters, bench's error labels and
// the daemon's API codes.
type Kind int

// The kinds, in the order Classify tests them: an error that matches
// several (a *StartupError whose cause is an *EngineUnavailableError) has
// the first.
const (
	KindOther      Kind = iota // none of the below
	KindApp                    // *AppError: the application reported an error
	KindTimeout                // *RequestTimeoutError
	KindStartup                // *StartupError
	KindCrash                  // *WorkerCrashError
	KindOverloaded             // *OverloadedError
	KindArtifact               // *ArtifactError
	KindEngine                 // *EngineUnavailableError
	KindPayload                // *protocol.PayloadError: a request or response msgpack cannot carry
	KindConfig                 // *ConfigError
	KindClosed                 // ErrClosed
	KindCanceled               // context.Canceled: the caller gave up
	KindDeadline               // context.DeadlineExceeded: the caller's deadline passed
)

var kindNames = [...]string{
	KindOther:      "other",
	KindApp:        "app",
	KindTimeout:    "timeout",
	KindStartup:    "startup",
	KindCrash:      "worker_crash",
	KindOverloaded: "overloaded",
	KindArtifact:   "artifact",
	KindEngine:     "engine_unavailable",
	KindPayload:    "payload",
	KindConfig:     "config",
	KindClosed:     "closed",
	KindCanceled:   "canceled",
	KindDeadline:   "deadline",
}

// String is the kind's stable, machine-readable name.
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return kindNames[KindOther]
	}
	return kindNames[k]
}

// Classify returns err's kind; nil is KindOther.
func Classify(err error) Kind {
	switch {
	case err == nil:
		return KindOther
	case errors.As(err, new(*AppError)):
		return KindApp
	case errors.As(err, new(*RequestTimeoutError)):
		return KindTimeout
	case errors.As(err, new(*StartupError)):
		return KindStartup
	case errors.As(err, new(*WorkerCrashError)):
		return KindCrash
	case errors.As(err, new(*OverloadedError)):
		return KindOverloaded
	case errors.As(err, new(*ArtifactError)):
		return KindArtifact
	case errors.As(err, new(*EngineUnavailableError)):
		return KindEngine
	case errors.As(err, new(*protocol.PayloadError)):
		return KindPayload
	case errors.As(err, new(*ConfigError)):
		return KindConfig
	case errors.Is(err, ErrClosed):
		return KindClosed
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return KindDeadline
	}
	return KindOther
}
