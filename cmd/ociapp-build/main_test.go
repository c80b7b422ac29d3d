package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/ociapp/ociapp/build"
	"github.com/ociapp/ociapp/engine"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestParseArgs(t *testing.T) {
	cases := []struct {
		args []string
		want options
		err  string
	}{
		{[]string{"app"}, options{root: "app"}, ""},
		{[]string{"app", "--output-dir", "dist"}, options{root: "app", outputDir: "dist"}, ""},
		{[]string{"--output-dir=dist", "app", "-q", "--base-image", "py:3"}, options{root: "app", outputDir: "dist", quiet: true, baseImage: "py:3"}, ""},
		{[]string{}, options{}, "missing PROJECT_ROOT"},
		{[]string{"a", "b"}, options{}, "one PROJECT_ROOT expected, got 2"},
		{[]string{"app", "--nope"}, options{}, "flag provided but not defined"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := parseArgs(c.args, &stderr)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func runCLI(t *testing.T, tty bool, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut, tty)
	return code, out.String(), errOut.String()
}

func TestQuietBuildPrintsNothing(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := runCLI(t, false, "../../examples/echo-go", "--output-dir", dir, "-q")
	if code != exitOK || stdout != "" || stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "echo-go-0.1.0.ociapp")); err != nil {
		t.Fatal(err)
	}
}

func TestPlainProgress(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := runCLI(t, false, "../../examples/echo-go", "--output-dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stderr, "\x1b[") || !strings.Contains(stderr, "==> compiling . for linux/") || !strings.Contains(stderr, "  GOOS=linux") {
		t.Errorf("plain progress: %q", stderr)
	}
	if !strings.HasPrefix(stdout, "built "+filepath.Join(dir, "echo-go-0.1.0.ociapp")+" (") {
		t.Errorf("stdout %q", stdout)
	}
}

func TestLiveProgress(t *testing.T) {
	code, _, stderr := runCLI(t, true, "../../examples/echo-go", "--output-dir", t.TempDir())
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// The step is drawn on a status line that is then cleared; phases stay.
	if !strings.Contains(stderr, "\r\x1b[K  GOOS=linux") || !strings.Contains(stderr, "==> writing") {
		t.Errorf("live progress: %q", stderr)
	}
}

func TestConfigErrorExit(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "pyproject.toml"), []byte("[project]\nname = \"a\"\nversion = \"1\"\n[tool.ociapp-build]\n"), 0o644)
	code, stdout, stderr := runCLI(t, false, root)
	if code != exitFail || stdout != "" {
		t.Fatalf("exit %d stdout %q", code, stdout)
	}
	if !strings.Contains(stderr, filepath.Join(root, "pyproject.toml")) || !strings.Contains(stderr, "tool.ociapp-build.entrypoint must be a non-empty string") {
		t.Errorf("stderr %q", stderr)
	}
}

func TestFailedStepIsShown(t *testing.T) {
	root := t.TempDir()
	for name, content := range map[string]string{
		"go.mod":      "module example.com/broken\n\ngo 1.22\n",
		"main.go":     "package main\n\nfunc main() { missing() }\n",
		"ociapp.toml": "name = \"broken\"\nversion = \"1\"\nentrypoint = \".\"\n",
	} {
		os.WriteFile(filepath.Join(root, name), []byte(content), 0o644)
	}
	code, _, stderr := runCLI(t, false, root, "-q")
	if code != exitFail {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(stderr, "ociapp-build: failed at: GOOS=linux") || !strings.Contains(stderr, "  | ./main.go:3:15: undefined: missing") {
		t.Errorf("stderr %q: want the failing step and its output", stderr)
	}
}

func TestBaseImageFlagOnCustomBuild(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "Containerfile"), []byte("FROM scratch\n"), 0o644)
	os.WriteFile(filepath.Join(root, "pyproject.toml"), []byte("[project]\nname = \"a\"\nversion = \"1\"\n[tool.ociapp-build]\nmode = \"custom\"\ncontainerfile = \"Containerfile\"\n"), 0o644)
	code, _, stderr := runCLI(t, false, root, "--base-image", "x:1")
	if code != exitUsage || !strings.Contains(stderr, "does not apply to a custom build") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestStripANSI(t *testing.T) {
	var buf bytes.Buffer
	d := newDisplay(&buf, false)
	d.event(build.Event{Kind: build.EventOutput, Text: "\x1b[91mociapp: error\x1b[0m"})
	if got := buf.String(); got != "    ociapp: error\n" {
		t.Errorf("got %q", got)
	}
}

func TestEngineUnavailableAdvice(t *testing.T) {
	// A managed Python build needs Docker; with none at DOCKER_HOST the
	// command says how to start it, once.
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
	code, stdout, stderr := runCLI(t, false, "../../examples/echo-app", "--output-dir", t.TempDir(), "-q")
	if code != exitFail || stdout != "" {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	want := "ociapp-build: is Docker running? scripts/ensure-docker.sh starts it"
	if strings.Count(stderr, want) != 1 || !strings.Contains(stderr, "no-docker.sock") {
		t.Errorf("stderr %q: want the error and, once, %q", stderr, want)
	}
}

func TestAdvice(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("pinging docker: %w", &engine.UnavailableError{Host: "unix:///x.sock", Err: errors.New("refused")}), "scripts/ensure-docker.sh"},
		{&build.StepError{Step: "RUN make", Err: errors.New("exit 2")}, ""},
		{errors.New("other"), ""},
	}
	for _, tt := range tests {
		got := advice(tt.err)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("advice(%v) = %q, want one containing %q", tt.err, got, tt.want)
		}
	}
}
