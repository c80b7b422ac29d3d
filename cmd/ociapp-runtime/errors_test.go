package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociapp/ociapp/engine"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

const (
	dockerAdvice     = "is Docker running? scripts/ensure-docker.sh starts it"
	kubernetesAdvice = "scripts/ensure-kubernetes.sh, then . /var/lib/ociapp-k8s/env"
	memoryAdvice     = "raise --memory"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{&runtime.AppError{Type: "ValueError"}, exitAppError},
		{fmt.Errorf("x: %w", &runtime.RequestTimeoutError{}), exitTimeout},
		{&runtime.StartupError{}, exitStartup},
		{&runtime.WorkerCrashError{}, exitCrash},
		{&runtime.ArtifactError{Err: errors.New("missing")}, exitUnavailable},
		{fmt.Errorf("connecting: %w", &runtime.EngineUnavailableError{Err: errors.New("refused")}), exitUnavailable},
		{fmt.Errorf("encoding: %w", &protocol.PayloadError{Message: "bad"}), exitUsage},
		{&runtime.ConfigError{Err: errors.New("bad option")}, exitUsage},
		{&runtime.OverloadedError{}, exitOther},
		{context.Canceled, exitOther},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestAdvice(t *testing.T) {
	unavailable := fmt.Errorf("pinging docker: %w", &engine.UnavailableError{Host: "unix:///x.sock", Err: errors.New("refused")})
	tests := []struct {
		name, engine string
		err          error
		want         string
	}{
		{"docker unreachable", engineDocker, unavailable, dockerAdvice},
		{"docker unreachable during a request", engineDocker, fmt.Errorf("executing: %w", unavailable), dockerAdvice},
		{"kubernetes unreachable", engineKubernetes, &engine.UnavailableError{Engine: "containerd", Err: errors.New("no socket")}, kubernetesAdvice},
		{"out of memory", engineDocker, &runtime.WorkerCrashError{Exited: true, OOMKilled: true}, memoryAdvice},
		{"out of memory at startup", engineDocker, &runtime.StartupError{Exited: true, OOMKilled: true}, memoryAdvice},
		{"crash", engineDocker, &runtime.WorkerCrashError{Exited: true, ExitCode: 1}, ""},
		{"application error", engineDocker, &runtime.AppError{Type: "ValueError"}, ""},
		{"other", engineDocker, errors.New("other"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := advice(tt.err, tt.engine)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("advice = %q, want one containing %q", got, tt.want)
			}
			var buf bytes.Buffer
			printError(&buf, "ociapp-runtime", tt.engine, tt.err)
			want := "ociapp-runtime: " + tt.err.Error() + "\n"
			if got != "" {
				want += "ociapp-runtime: " + got + "\n"
			}
			if buf.String() != want {
				t.Errorf("printed %q, want %q", buf.String(), want)
			}
		})
	}
}

// A start that failed because the engine could not be reached is a startup
// failure (runtime.Classify): it exits as one, and the advice is the
// engine's, since the engine, not the application, is what to fix.
func TestStartupWithoutEngineAdvice(t *testing.T) {
	unavailable := &engine.UnavailableError{Host: "unix:///x.sock", Err: errors.New("refused")}
	tests := []struct {
		name, engine string
		err          error
		want         string
	}{
		{"docker", engineDocker, &runtime.StartupError{Artifact: "echo 1", Reason: "the engine could not create it", Err: unavailable}, dockerAdvice},
		{"kubernetes", engineKubernetes, fmt.Errorf("executing: %w", &runtime.StartupError{Err: unavailable}), kubernetesAdvice},
		// Out of memory is what to fix, whatever else went wrong.
		{"out of memory", engineDocker, &runtime.StartupError{Exited: true, OOMKilled: true, Err: unavailable}, memoryAdvice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != exitStartup {
				t.Errorf("exit %d, want %d", got, exitStartup)
			}
			if got := advice(tt.err, tt.engine); !strings.Contains(got, tt.want) {
				t.Errorf("advice = %q, want one containing %q", got, tt.want)
			}
		})
	}
}

// TestEngineUnavailableAdvice runs each command against an engine that is
// not there: each prints the error, then once the advice for that engine.
func TestEngineUnavailableAdvice(t *testing.T) {
	dir := testenv.ShortTempDir(t)
	noDocker := []string{"--docker-host", "unix://" + filepath.Join(dir, "no-docker.sock")}
	noCluster := []string{"--engine", "kubernetes", "--kubeconfig", filepath.Join(dir, "no-kubeconfig"), "--containerd", filepath.Join(dir, "no-containerd.sock")}
	serve := []string{"serve", "--listen", "unix://" + filepath.Join(dir, "d.sock"), "--state-dir", filepath.Join(dir, "state")}
	tests := []struct {
		name   string
		args   []string
		code   int
		advice string
	}{
		{"run, docker", append(append([]string{"run"}, noDocker...), "a.ociapp"), exitUnavailable, dockerAdvice},
		{"run, kubernetes", append(append([]string{"run"}, noCluster...), "a.ociapp"), exitUnavailable, kubernetesAdvice},
		{"bench, docker", append([]string{"bench", "a.ociapp"}, noDocker...), exitBenchFailed, dockerAdvice},
		{"bench, kubernetes", append([]string{"bench", "a.ociapp"}, noCluster...), exitBenchFailed, kubernetesAdvice},
		{"serve, docker", append(serve, noDocker...), exitUnavailable, dockerAdvice},
		{"serve, kubernetes", append(serve, noCluster...), exitUnavailable, kubernetesAdvice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, nil, &stdout, &stderr)
			if code != tt.code || stdout.Len() != 0 {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %s", code, tt.code, stdout.String(), stderr.String())
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, tt.advice) || strings.Count(stderr.String(), tt.advice) != 1 || !strings.Contains(stderr.String(), "cannot reach") {
				t.Errorf("stderr %q: want the error, then once %q", stderr.String(), tt.advice)
			}
		})
	}
}
