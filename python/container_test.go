package python

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ociapp/ociapp/internal/benchtest"
	"github.com/ociapp/ociapp/internal/cpustat"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// baseImage is the local Python image scripts/ensure-base-images.sh builds.
const baseImage = "ociapp-local/python:3.13"

// serveScript installs the SDK and the echo example from their read-only
// mounts into a virtualenv (offline: the image already holds pydantic and
// msgpack) and serves the example, as a managed build's image would.
const serveScript = `set -e
cp -r /sdk /tmp/sdk
cp -r /app /tmp/app
python3 -m venv --system-site-packages /tmp/venv
/tmp/venv/bin/pip install --quiet --no-index --no-build-isolation --no-cache-dir /tmp/sdk /tmp/app
exec /tmp/venv/bin/ociapp serve --app echo_app.main:app "$@"`

// requireDocker skips the test when Docker or the base image is missing,
// and fails it instead when CI=true.
func requireDocker(t testing.TB) {
	t.Helper()
	problem := dockerProblem()
	if problem == "" {
		return
	}
	testenv.Need(t, "Docker with the local base image", "run scripts/ensure-docker.sh and scripts/ensure-base-images.sh", errors.New(problem))
}

func dockerProblem() string {
	if _, err := exec.LookPath("docker"); err != nil {
		return "the docker command is not installed"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return fmt.Sprintf("the Docker daemon does not answer: %v: %s", err, bytes.TrimSpace(out))
	}
	if err := exec.CommandContext(ctx, "docker", "image", "inspect", baseImage).Run(); err != nil {
		return fmt.Sprintf("the base image %s is not present", baseImage)
	}
	return ""
}

func docker(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", args[0], err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

type container struct {
	id     string
	socket string
}

// startEchoContainer runs the echo example under the Python SDK in a
// hardened container (non-root, no network, an init process) and waits for
// its socket to appear in a host directory mounted at /run/ociapp.
func startEchoContainer(t testing.TB) *container {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The container user is not root and must create the socket here.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	args := []string{"run", "-d", "--init", "--network", "none",
		"--user", "65534:65534", "-e", "HOME=/tmp",
		"-v", dir + ":/run/ociapp",
		"-v", filepath.Join(repo, "python") + ":/sdk:ro",
		"-v", filepath.Join(repo, "examples", "echo-app") + ":/app:ro",
		baseImage, "sh", "-c", serveScript, "serve"}
	// OCIAPP_PYTHON_SERVE_ARGS adds flags to `ociapp serve`, e.g.
	// "--loop asyncio" to measure without uvloop.
	args = append(args, strings.Fields(os.Getenv("OCIAPP_PYTHON_SERVE_ARGS"))...)
	id, err := docker(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := docker(context.Background(), "rm", "-f", id); err != nil {
			t.Errorf("removing container: %v", err)
		}
	})
	c := &container{id: id, socket: filepath.Join(dir, "app.sock")}
	c.waitForSocket(t, 120*time.Second)
	return c
}

func (c *container) waitForSocket(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	lastCheck := time.Now()
	for {
		if _, err := os.Stat(c.socket); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s did not appear within %s\n%s", c.socket, timeout, c.logs())
		}
		if time.Since(lastCheck) > time.Second {
			lastCheck = time.Now()
			if running, _ := docker(context.Background(), "inspect", "-f", "{{.State.Running}}", c.id); running != "true" {
				t.Fatalf("container exited before its socket appeared\n%s", c.logs())
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *container) logs() string {
	out, _ := exec.Command("docker", "logs", "--tail", "50", c.id).CombinedOutput()
	return "container logs:\n" + string(out)
}

func dial(t testing.TB, socket string, opts ...protocol.ClientOption) *protocol.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := protocol.Dial(ctx, socket, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	b, err := protocol.EncodePayload(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPythonEchoInContainer(t *testing.T) {
	requireDocker(t)
	c := startEchoContainer(t)
	client := dial(t, c.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("socket mode", func(t *testing.T) {
		info, err := os.Stat(c.socket)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o666 {
			t.Errorf("socket mode is %v, want a socket with mode 0666", info.Mode())
		}
	})

	t.Run("round trip", func(t *testing.T) {
		resp, err := client.Call(ctx, encode(t, map[string]any{"value": "hello from Go"}))
		if err != nil {
			t.Fatal(err)
		}
		got, err := protocol.DecodePayload(resp)
		if err != nil {
			t.Fatal(err)
		}
		if got["value"] != "hello from Go" || len(got) != 1 {
			t.Errorf("response is %v, want value=hello from Go", got)
		}
	})

	errorCases := []struct {
		name        string
		payload     []byte
		wantType    string
		wantMessage string
		wantErrors  []map[string]any // checked fields of details.errors
	}{
		{
			name:        "wrong type",
			payload:     encode(t, map[string]any{"value": 42}),
			wantType:    "ValidationError",
			wantMessage: "application payload validation failed",
			wantErrors:  []map[string]any{{"type": "string_type", "loc": []any{int64(1), "value"}, "msg": "Input should be a valid string", "input": int64(42)}},
		},
		{
			name:        "missing field",
			payload:     encode(t, map[string]any{}),
			wantType:    "ValidationError",
			wantMessage: "application payload validation failed",
			wantErrors:  []map[string]any{{"type": "missing", "loc": []any{int64(1), "value"}, "msg": "Field required"}},
		},
		{
			name:        "not a map",
			payload:     []byte{0x92, 0x01, 0x02},
			wantType:    "PayloadCodecError",
			wantMessage: "payload must decode to a msgpack map",
		},
		{
			name:        "not msgpack",
			payload:     []byte{0xc1},
			wantType:    "PayloadCodecError",
			wantMessage: "payload is not valid msgpack",
		},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Call(ctx, tc.payload)
			var appErr *protocol.AppError
			if !errors.As(err, &appErr) {
				t.Fatalf("Call returned %v, want an *protocol.AppError", err)
			}
			if appErr.Type != tc.wantType || appErr.Message != tc.wantMessage {
				t.Errorf("error is %s: %q, want %s: %q", appErr.Type, appErr.Message, tc.wantType, tc.wantMessage)
			}
			if tc.wantErrors == nil {
				if appErr.Details != nil {
					t.Errorf("details = %v, want nil", appErr.Details)
				}
				return
			}
			details, _ := appErr.Details.(map[string]any)
			list, _ := details["errors"].([]any)
			if len(list) != len(tc.wantErrors) {
				t.Fatalf("details = %v, want %d errors", appErr.Details, len(tc.wantErrors))
			}
			for i, want := range tc.wantErrors {
				got, _ := list[i].(map[string]any)
				for key, value := range want {
					if fmt.Sprint(got[key]) != fmt.Sprint(value) {
						t.Errorf("error %d: %s = %#v, want %#v (error: %v)", i, key, got[key], value, got)
					}
				}
			}
		})
	}

	// The SDK declares the deadline capability, so the runtime's client
	// sends each call's time left: the server reads the 3-key request.
	t.Run("deadline", func(t *testing.T) {
		timed := dial(t, c.socket, protocol.WithDeadlines())
		resp, err := timed.Call(ctx, encode(t, map[string]any{"value": "timed"}))
		if err != nil {
			t.Fatalf("call with a deadline: %v", err)
		}
		if got, err := protocol.DecodePayload(resp); err != nil || got["value"] != "timed" {
			t.Errorf("response %v, %v; want value=timed", got, err)
		}
	})

	t.Run("concurrent calls", func(t *testing.T) {
		const n = 500
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				value := fmt.Sprintf("request %d", i)
				resp, err := client.Call(ctx, encode(t, map[string]any{"value": value}))
				if err != nil {
					errs <- err
					return
				}
				got, err := protocol.DecodePayload(resp)
				if err != nil || got["value"] != value {
					errs <- fmt.Errorf("request %d: got %v, %v", i, got, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("stop drains and exits 0", func(t *testing.T) {
		if _, err := docker(ctx, "stop", "-t", "10", c.id); err != nil {
			t.Fatal(err)
		}
		code, err := docker(ctx, "inspect", "-f", "{{.State.ExitCode}}", c.id)
		if err != nil {
			t.Fatal(err)
		}
		if code != "0" {
			t.Errorf("exit code after docker stop is %s, want 0\n%s", code, c.logs())
		}
		if _, err := os.Stat(c.socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket still present after stop: %v", err)
		}
		select {
		case <-client.Done():
		case <-time.After(5 * time.Second):
			t.Error("client connection still open after the server stopped")
		}
	})
}

// BenchmarkPythonEcho measures the echo example under the Python SDK in a
// container, driven over one multiplexed connection by the Go client:
// c1 is one request at a time (latency), c64 keeps 64 in flight
// (throughput). Each reports the median latency and requests per second.
// The -nopoll variants use a client that never busy-polls
// (protocol.WithBusyPoll(0)), to show what polling buys.
func BenchmarkPythonEcho(b *testing.B) {
	requireDocker(b)
	c := startEchoContainer(b)
	clients := []struct {
		suffix string
		client *protocol.Client
	}{
		{"", dial(b, c.socket)},
		{"-nopoll", dial(b, c.socket, protocol.WithBusyPoll(0))},
	}
	payload := encode(b, map[string]any{"value": "hello"})
	for _, cl := range clients {
		for _, concurrency := range []int{1, 64} {
			b.Run(fmt.Sprintf("c%d%s", concurrency, cl.suffix), func(b *testing.B) {
				benchmarkCalls(b, c, cl.client, payload, concurrency)
			})
		}
	}
}

func benchmarkCalls(b *testing.B, c *container, client *protocol.Client, payload []byte, concurrency int) {
	ctx := context.Background()
	server, err := cpustat.Container(c.id)
	if err != nil {
		b.Fatal(err)
	}
	benchtest.RunConcurrent(b, concurrency, func() error {
		resp, err := client.Call(ctx, payload)
		if err == nil && !bytes.Equal(resp, payload) { // the echo of {"value": "hello"}
			err = fmt.Errorf("unexpected response %x", resp)
		}
		return err
	}, server)
}
