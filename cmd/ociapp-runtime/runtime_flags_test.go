package main

import (
	"bytes"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ociapp/ociapp/protocol"
	"github.com/ociapp/ociapp/runtime"
)

// allRuntimeFlags are the names runtimeFlags defines, "timeout" aside.
var allRuntimeFlags = []string{"memory", "cpus", "network", "allow-root", "socket-dir-limit", "state-dir", "busy-poll",
	"startup-timeout", "request-timeout", "shutdown-timeout", "idle-timeout", "reaper-interval",
	"max-containers", "min-containers", "container-concurrency", "queue-size"}

func parseRuntimeFlags(t *testing.T, args ...string) (runtimeFlags, []runtime.Option, error) {
	t.Helper()
	var rf runtimeFlags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	rf.register(fs, allRuntimeFlags...)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	opts, err := rf.options()
	return rf, opts, err
}

func TestRuntimeFlagDefaults(t *testing.T) {
	rf, opts, err := parseRuntimeFlags(t)
	if err != nil {
		t.Fatal(err)
	}
	want := runtimeFlags{
		registered: allRuntimeFlags,
		memory:     "1g", socketDirLimit: "1m", network: runtime.DefaultNetwork,
		busyPoll: protocol.DefaultBusyPoll, startupTimeout: runtime.DefaultStartupTimeout, requestTimeout: runtime.DefaultRequestTimeout,
		shutdownTimeout: runtime.DefaultShutdownTimeout, idleTimeout: runtime.DefaultIdleTimeout, reaperInterval: runtime.DefaultReaperInterval,
		maxContainers: runtime.DefaultMaxContainers(), containerConcurrency: runtime.DefaultContainerConcurrency, queueSize: runtime.DefaultQueueSize,
	}
	if !reflect.DeepEqual(rf, want) {
		t.Errorf("defaults\n got %+v\nwant %+v", rf, want)
	}
	// Every flag but the unset state directory gives an option.
	if len(opts) != len(allRuntimeFlags)-1 {
		t.Errorf("%d options from %d flags", len(opts), len(allRuntimeFlags))
	}
}

func TestRuntimeFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--memory", "lots"}, "--memory: invalid size"},
		{[]string{"--socket-dir-limit", "-1m"}, "--socket-dir-limit: invalid size"},
		{[]string{"--max-containers", "-1"}, "--max-containers must not be negative"},
		{[]string{"--max-containers", "0"}, "--max-containers must be at least 1"},
		{[]string{"--container-concurrency", "-2"}, "--container-concurrency must not be negative"},
		{[]string{"--request-timeout", "-1s"}, "--request-timeout must not be negative"},
		{[]string{"--busy-poll", "-1us"}, "--busy-poll must not be negative"},
		{[]string{"--cpus", "-0.5"}, "--cpus must not be negative"},
		{[]string{"--queue-size", "-1"}, "--queue-size must not be negative"},
	}
	for _, tt := range tests {
		if _, _, err := parseRuntimeFlags(t, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
	rf, opts, err := parseRuntimeFlags(t, "--max-containers", "3", "--memory", "0", "--state-dir", "/tmp/s", "--busy-poll", "0")
	if err != nil || rf.maxContainers != 3 || rf.memory != "0" || len(opts) != len(allRuntimeFlags) {
		t.Errorf("set flags: %+v, %d options, %v", rf, len(opts), err)
	}
}

func TestRuntimeFlagNames(t *testing.T) {
	// run calls the request timeout --timeout; the help shows the
	// runtime's defaults.
	var rf runtimeFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	rf.register(fs, "timeout", "memory")
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.PrintDefaults()
	for _, want := range []string{"-timeout duration", "(default 30s)", "-memory string", `(default "1g")`} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
	if err := fs.Parse([]string{"--timeout", "2s"}); err != nil || rf.requestTimeout != 2*time.Second {
		t.Errorf("--timeout 2s: %v, %v", rf.requestTimeout, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering an unknown flag did not panic")
		}
	}()
	rf.register(flag.NewFlagSet("x", flag.ContinueOnError), "no-such-flag")
}
