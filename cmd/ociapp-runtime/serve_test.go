package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociapp/ociapp/daemon"
	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/remote"
)

func TestParseServeArgs(t *testing.T) {
	dir := t.TempDir()
	writeToken := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := writeToken("good", "  s3cret\n", 0o600)
	open := writeToken("open", "s3cret", 0o644)
	empty := writeToken("empty", "\n", 0o600)

	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c serveConfig)
	}{
		{name: "defaults", check: func(t *testing.T, c serveConfig) {
			d := c.daemon
			if d.Listen != daemon.DefaultListen() || d.StateDir != daemon.DefaultStateDir() || d.Token != "" ||
				d.SocketMode != 0o600 || d.MaxArtifactSize != api.DefaultMaxArtifactSize || d.MaxRequestSize != api.DefaultMaxRequestSize ||
				d.MaxBodyMemory != daemon.DefaultMaxBodyMemory || d.BodyTimeout != daemon.DefaultBodyTimeout || d.MinBodyRate != daemon.DefaultMinBodyRate ||
				d.StoreQuota != daemon.DefaultStoreQuota || d.UploadTTL != daemon.DefaultUploadTTL {
				t.Fatalf("%+v", d)
			}
		}},
		{name: "body and store limits", args: []string{"--max-body-memory", "64m", "--body-timeout", "5s", "--min-body-rate", "0", "--store-quota", "4g", "--upload-ttl", "1h"},
			check: func(t *testing.T, c serveConfig) {
				d := c.daemon
				if d.MaxBodyMemory != 64<<20 || d.BodyTimeout != 5*time.Second || d.MinBodyRate != 0 || d.StoreQuota != 4<<30 || d.UploadTTL != time.Hour {
					t.Fatalf("%+v", d)
				}
			}},
		{name: "processors", check: func(t *testing.T, c serveConfig) {
			if want := daemon.Procs(goruntime.GOMAXPROCS(0)); c.procs != want {
				t.Fatalf("procs %d, want %d", c.procs, want)
			}
		}},
		{name: "processors from GOMAXPROCS", env: map[string]string{"GOMAXPROCS": "3"}, check: func(t *testing.T, c serveConfig) {
			if c.procs != 0 {
				t.Fatalf("procs %d, want 0: the variable's value stands", c.procs)
			}
		}},
		{name: "body memory below a request", args: []string{"--max-body-memory", "1m"}, wantErr: "--max-body-memory"},
		{name: "quota below an artifact", args: []string{"--store-quota", "1g"}, wantErr: "--store-quota"},
		{name: "zero upload ttl", args: []string{"--upload-ttl", "0s"}, wantErr: "--upload-ttl"},
		{name: "tcp with token file", args: []string{"--listen", "tcp://0.0.0.0:7000", "--token-file", good, "--socket-mode", "0660", "--max-artifact-size", "512m", "--max-request-size", "1m"},
			check: func(t *testing.T, c serveConfig) {
				d := c.daemon
				if d.Token != "s3cret" || d.SocketMode != 0o660 || d.MaxArtifactSize != 512<<20 || d.MaxRequestSize != 1<<20 {
					t.Fatalf("%+v", d)
				}
			}},
		{name: "tcp with token from env", args: []string{"--listen", "tcp://127.0.0.1:7000"}, env: map[string]string{tokenEnv: "envtok"},
			check: func(t *testing.T, c serveConfig) {
				if c.daemon.Token != "envtok" {
					t.Fatalf("token %q", c.daemon.Token)
				}
			}},
		{name: "token file wins over env", args: []string{"--token-file", good}, env: map[string]string{tokenEnv: "envtok"},
			check: func(t *testing.T, c serveConfig) {
				if c.daemon.Token != "s3cret" {
					t.Fatalf("token %q", c.daemon.Token)
				}
			}},
		{name: "tcp without token", args: []string{"--listen", "tcp://127.0.0.1:7000"}, wantErr: "requires a token"},
		{name: "token file readable by others", args: []string{"--token-file", open}, wantErr: "readable by other users"},
		{name: "empty token file", args: []string{"--token-file", empty}, wantErr: "is empty"},
		{name: "missing token file", args: []string{"--token-file", filepath.Join(dir, "nope")}, wantErr: "no such file"},
		{name: "bad socket mode", args: []string{"--socket-mode", "rw"}, wantErr: "--socket-mode"},
		{name: "bad size", args: []string{"--max-artifact-size", "lots"}, wantErr: "--max-artifact-size"},
		{name: "zero size", args: []string{"--max-request-size", "0"}, wantErr: "--max-request-size"},
		{name: "request size above frames", args: []string{"--max-request-size", "16m"}, wantErr: "cannot be sent"},
		{name: "bad memory", args: []string{"--memory", "x"}, wantErr: "--memory"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{name: "argument", args: []string{"extra"}, wantErr: errUsageShown.Error()},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: errUsageShown.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var usage bytes.Buffer
			c, err := parseServeArgs(tt.args, &usage, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.runtime) == 0 {
				t.Fatal("no runtime options")
			}
			tt.check(t, c)
		})
	}
	var usage bytes.Buffer
	if _, err := parseServeArgs([]string{"-h"}, &usage, os.Getenv); !errors.Is(err, flag.ErrHelp) || !strings.Contains(usage.String(), "--token-file") && !strings.Contains(usage.String(), "-token-file") {
		t.Fatalf("-h: %v\n%s", err, usage.String())
	}
}

func TestServeUsageExit(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--listen", "tcp://127.0.0.1:0"}, nil, &stdout, &stderr); code != exitUsage {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "requires a token") {
		t.Fatalf("stderr %s", stderr.String())
	}
}

func TestServeEngineUnavailable(t *testing.T) {
	dir := testenv.ShortTempDir(t)
	var stdout, stderr bytes.Buffer
	code := runServe(context.Background(), []string{"--listen", "unix://" + filepath.Join(dir, "d.sock"), "--state-dir", filepath.Join(dir, "state"), "--docker-host", "unix://" + filepath.Join(dir, "no-docker.sock")}, &stdout, &stderr)
	if code != exitUnavailable {
		t.Fatalf("exit %d, want %d; stderr %s", code, exitUnavailable, stderr.String())
	}
}

// TestServeEndToEnd runs the serve command in this process and executes a
// request through it with the remote executor; cancelling its context is
// the SIGTERM that main turns into a cancellation.
func TestServeEndToEnd(t *testing.T) {
	dockertest.Engine(t)
	echo := testArtifact(t, "echo-go")
	dir := testenv.ShortTempDir(t)
	sock := filepath.Join(dir, "d.sock")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdoutR, stdoutW := io.Pipe()
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- runServe(ctx, []string{"--listen", "unix://" + sock, "--state-dir", filepath.Join(dir, "state"), "--token-file", tokenFile, "--log-level", "debug"}, stdoutW, &stderr)
		stdoutW.Close()
	}()
	lines := bufio.NewScanner(stdoutR)
	if !lines.Scan() || lines.Text() != "listening on unix://"+sock {
		t.Fatalf("stdout %q; stderr:\n%s", lines.Text(), stderr.String())
	}
	go io.Copy(io.Discard, stdoutR)

	ex, err := remote.New("unix://"+sock, remote.WithTokenFile(tokenFile))
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	resp, err := ex.Execute(ctx, echo, map[string]any{"value": "through serve"})
	if err != nil || resp["value"] != "through serve" {
		t.Fatalf("%v %v; stderr:\n%s", resp, err, stderr.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not stop within a minute")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	if !strings.Contains(stderr.String(), "daemon stopped") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}
}

// lockedBuffer is a bytes.Buffer that a logger may write to while a test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestStopOnClose(t *testing.T) {
	r, w := io.Pipe()
	ctx, cancel := stopOnClose(context.Background(), r)
	defer cancel()
	if _, err := w.Write([]byte("data is ignored\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
		t.Fatal("stopped while its input was open")
	case <-time.After(50 * time.Millisecond):
	}
	w.Close()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("did not stop when its input closed")
	}
}
