package runtime

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/protocol"
)

func TestClassify(t *testing.T) {
	unavailable := &engine.UnavailableError{Err: errors.New("connection refused")}
	tests := []struct {
		err  error
		want Kind
	}{
		{nil, KindOther},
		{errors.New("boom"), KindOther},
		{fmt.Errorf("executing: %w", &AppError{Type: "ValueError"}), KindApp},
		{&RequestTimeoutError{}, KindTimeout},
		{&StartupError{}, KindStartup},
		// A start that failed because the engine went away is a startup failure.
		{&StartupError{Err: unavailable}, KindStartup},
		{&WorkerCrashError{}, KindCrash},
		{&OverloadedError{}, KindOverloaded},
		{&ArtifactError{Err: errors.New("truncated")}, KindArtifact},
		{unavailable, KindEngine},
		{&protocol.PayloadError{}, KindPayload},
		{&ConfigError{Err: errors.New("bad")}, KindConfig},
		{fmt.Errorf("executing: %w", ErrClosed), KindClosed},
		{context.Canceled, KindCanceled},
		{context.DeadlineExceeded, KindDeadline},
	}
	for _, tt := range tests {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestKindNames(t *testing.T) {
	seen := map[string]Kind{}
	for k := KindOther; k <= KindDeadline; k++ {
		name := k.String()
		if prev, ok := seen[name]; ok || name == "" {
			t.Errorf("kind %d is named %q, as kind %d", k, name, prev)
		}
		seen[name] = k
	}
	if got := Kind(99).String(); got != "other" {
		t.Errorf("an unknown kind is named %q", got)
	}
}

func TestCapabilitiesOf(t *testing.T) {
	for _, tt := range []struct {
		names []string
		want  capabilities
	}{
		{nil, capabilities{}},
		{[]string{"ping", "pong"}, capabilities{}},
		{[]string{"cancel"}, capabilities{cancel: true}},
		{[]string{"cancel", "deadline"}, capabilities{deadline: true, cancel: true}},
		{[]string{"stream", "ping"}, capabilities{stream: true}},
		{[]string{"cancel", "deadline", "stream"}, capabilities{deadline: true, cancel: true, stream: true}},
	} {
		if got := capabilitiesOf(tt.names); got != tt.want {
			t.Errorf("capabilitiesOf(%q) = %+v, want %+v", tt.names, got, tt.want)
		}
	}
}
