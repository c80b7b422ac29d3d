package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/ociapp/ociapp/internal/testenv"
	"github.com/ociapp/ociapp/internal/testenv/dockertest"
	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testApps.dir != "" {
		_ = os.RemoveAll(testApps.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestWriteJSON(t *testing.T) {
	v := map[string]any{"nan": math.NaN(), "inf": math.Inf(-1), "m": map[any]any{int64(1): "a"}, "s": "<&>", "b": []byte("hi"),
		"f": []any{1.0, 2.5, 1e21, float32(3), int64(4)}}
	payload, err := protocol.EncodePayload(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		pretty bool
		want   string
	}{
		{false, `{"b":"aGk=","f":[1.0,2.5,1e+21,3.0,4],"inf":"-Inf","m":{"1":"a"},"nan":"NaN","s":"<&>"}` + "\n"},
		{true, "{\n  \"b\": \"aGk=\",\n  \"f\": [\n    1.0,\n    2.5,\n    1e+21,\n    3.0,\n    4\n  ],\n" +
			"  \"inf\": \"-Inf\",\n  \"m\": {\n    \"1\": \"a\"\n  },\n  \"nan\": \"NaN\",\n  \"s\": \"<&>\"\n}\n"},
	} {
		var buf bytes.Buffer
		if err := writeJSON(&buf, payload, tt.pretty); err != nil {
			t.Fatal(err)
		}
		if buf.String() != tt.want {
			t.Errorf("pretty %v: got %s want %s", tt.pretty, buf.String(), tt.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want int
		msg  string
	}{
		{nil, exitUsage, "usage:"},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"run"}, exitUsage, "usage: ociapp-runtime run"},
		{[]string{"run", "a", "b", "c"}, exitUsage, "usage: ociapp-runtime run"},
		{[]string{"run", "x.ociapp", "[1,2]"}, exitUsage, "must be a JSON object"},
		{[]string{"run", "--memory", "lots", "x.ociapp"}, exitUsage, "invalid size"},
		{[]string{"run", "--bogus", "x.ociapp"}, exitUsage, "flag provided but not defined"},
		{[]string{"run", "--timeout", "0s", "x.ociapp"}, exitUsage, "request timeout must be positive"},
		{[]string{"version"}, exitOK, ""},
		{[]string{"help"}, exitOK, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := run(t.Context(), tt.args, strings.NewReader(""), &stdout, &stderr)
			if got != tt.want || !strings.Contains(stderr.String(), tt.msg) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", got, stderr.String(), tt.want, tt.msg)
			}
		})
	}
}

// End-to-end: the CLI against the local Docker daemon.

// artifacts builds the runtime's test applications once per test binary.
type artifacts struct {
	once  sync.Once
	dir   string
	paths map[string]string
	err   error
}

var testApps artifacts

func testArtifact(t *testing.T, name string) string {
	t.Helper()
	testApps.once.Do(func() {
		testApps.dir, testApps.err = os.MkdirTemp("", "ociapp-cli-test-")
		if testApps.err != nil {
			return
		}
		names := []string{"echo-go", "sleeper", "exitstart", "crasher", "streamer"}
		cmd := exec.Command("go", append([]string{"run", "github.com/ociapp/ociapp/internal/testapps/mkartifact", testApps.dir}, names...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			testApps.err = fmt.Errorf("building test artifacts: %v\n%s", err, out)
			return
		}
		testApps.paths = map[string]string{}
		for _, n := range names {
			testApps.paths[n] = filepath.Join(testApps.dir, n+"-0.1.0.ociapp")
		}
	})
	if testApps.err != nil {
		t.Fatal(testApps.err)
	}
	return testApps.paths[name]
}

func TestRunEndToEnd(t *testing.T) {
	dockertest.Engine(t)
	stateDir := testenv.ShortTempDir(t)
	tests := []struct {
		name   string
		args   []string
		stdin  string
		want   int
		stdout string
		stderr string
	}{
		{name: "echo", args: []string{"echo-go", `{"value": "hi"}`}, want: exitOK, stdout: `{"value":"hi"}` + "\n"},
		{name: "stdin", args: []string{"echo-go", "-"}, stdin: `{"value": "from stdin"}`, want: exitOK, stdout: `{"value":"from stdin"}` + "\n"},
		{name: "app error", args: []string{"echo-go", `{"value": 5}`}, want: exitAppError, stdout: `"error_type":"ValidationError"`, stderr: "ValidationError"},
		{name: "timeout", args: []string{"--timeout", "300ms", "sleeper", `{"millis": 5000}`}, want: exitTimeout, stderr: "timed out after 300ms"},
		{name: "startup", args: []string{"exitstart"}, want: exitStartup, stderr: "ImportError"},
		{name: "crash", args: []string{"crasher", `{"crash": true}`}, want: exitCrash, stderr: "exit code 3"},
		{name: "stream", args: []string{"streamer", `{"count": 3, "size": 1}`}, want: exitOK,
			stdout: `{"i":0,"pad":"x"}` + "\n" + `{"i":1,"pad":"x"}` + "\n" + `{"i":2,"pad":"x"}` + "\n"},
		{name: "stream error after items", args: []string{"streamer", `{"count": 5, "fail_at": 2}`}, want: exitAppError,
			stdout: `{"i":0,"pad":""}` + "\n" + `{"i":1,"pad":""}` + "\n" + `{"details":null,"error_type":"StreamFailed","message":"failed at 2"}` + "\n", stderr: "StreamFailed"},
		{name: "missing", args: []string{"/no/such.ociapp"}, want: exitUnavailable, stderr: "no such file"},
		{name: "no engine", args: []string{"--docker-host", "unix:///no/such.sock", "echo-go"}, want: exitUnavailable, stderr: "cannot reach"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"run", "--state-dir", stateDir}
			for _, a := range tt.args {
				if p := testArtifactIfName(t, a); p != "" {
					a = p
				}
				args = append(args, a)
			}
			var stdout, stderr bytes.Buffer
			got := run(t.Context(), args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if got != tt.want || !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q", got, stdout.String(), stderr.String(), tt.want, tt.stdout, tt.stderr)
			}
			if tt.want == exitAppError {
				// The error is the last line, after the items of a stream.
				lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
				var m map[string]any
				if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil || m["error_type"] == nil {
					t.Fatalf("app error output %q: %v", stdout.String(), err)
				}
			}
		})
	}
	// What verified the artifact (the runtime's verified/) is kept for later runtimes.
	if entries, _ := os.ReadDir(stateDir); len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "verified" {
		t.Fatalf("state directory holds %v after the runs", entries)
	}
}

func testArtifactIfName(t *testing.T, arg string) string {
	switch arg {
	case "echo-go", "sleeper", "exitstart", "crasher", "streamer":
		return testArtifact(t, arg)
	}
	return ""
}

// closingReader is standard output whose reader goes away after n writes,
// as `head -n` does.
type closingReader struct{ n int }

func (w *closingReader) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, syscall.EPIPE
	}
	w.n--
	return len(p), nil
}

// TestRunStreamToAReaderThatGoesAway: run ... | head ends an endless
// stream: the handler is cancelled, the container stopped, and run exits 0.
func TestRunStreamToAReaderThatGoesAway(t *testing.T) {
	eng := dockertest.Engine(t)
	stateDir := testenv.ShortTempDir(t)
	var stderr bytes.Buffer
	args := []string{"run", "--state-dir", stateDir, testArtifact(t, "streamer"), `{"count": -1}`}
	if got := run(t.Context(), args, strings.NewReader(""), &closingReader{n: 2}, &stderr); got != exitOK {
		t.Fatalf("exit %d, stderr %q", got, stderr.String())
	}
	list, err := eng.ListContainers(t.Context(), map[string]string{runtime.LabelStateDir: stateDir})
	if err != nil || len(list) != 0 {
		t.Fatalf("containers left: %v, %v", list, err)
	}
}
