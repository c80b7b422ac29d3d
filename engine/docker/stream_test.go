package docker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/ociapp/ociapp/engine"
)

func TestParseLoadStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stream  string
		want    []string
		wantErr string // "" : no error; else a *engine.LoadError with this message
	}{
		{"classic tagged", `{"stream":"Loaded image: app:1.0\n"}`, []string{"app:1.0"}, ""},
		{"classic untagged", `{"stream":"Loaded image ID: sha256:abc\n"}`, []string{"sha256:abc"}, ""},
		{"several, split across messages", `{"stream":"Loaded ima"}` + "\n" + `{"stream":"ge: a:1\nLoaded image: b:2\n"}`, []string{"a:1", "b:2"}, ""},
		{"no final newline", `{"stream":"Loaded image: a:1"}`, []string{"a:1"}, ""},
		{"CRLF", `{"stream":"Loaded image: a:1\r\n"}`, []string{"a:1"}, ""},
		{"progress and other lines ignored", `{"status":"Loading layer","progressDetail":{"current":1,"total":2},"id":"abc"}{"stream":"Something else\n"}{"stream":"Loaded image: a:1\n"}`, []string{"a:1"}, ""},
		{"empty", ``, nil, ""},
		{"error detail", `{"errorDetail":{"message":"archive/tar: invalid tar header"},"error":"archive/tar: invalid tar header"}`, nil, "archive/tar: invalid tar header"},
		{"error only", `{"stream":"Loaded image: a:1\n"}{"error":"disk full"}`, nil, "disk full"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLoadStream(strings.NewReader(tc.stream))
			if tc.wantErr != "" {
				var le *engine.LoadError
				if !errors.As(err, &le) || le.Message != tc.wantErr {
					t.Fatalf("got %v, want *engine.LoadError %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseLoadStreamMalformed(t *testing.T) {
	for _, s := range []string{`{"stream":`, `not json`, `{"stream":42}`} {
		_, err := parseLoadStream(strings.NewReader(s))
		var le *engine.LoadError
		if err == nil || errors.As(err, &le) {
			t.Errorf("parseLoadStream(%q) = %v, want a decoding error", s, err)
		}
	}
}

func TestParseBuildStream(t *testing.T) {
	const id = "sha256:" + "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	ok := `{"stream":"Step 1/2 : FROM base\n"}` +
		`{"stream":" ---\u003e 1234\n"}` +
		`{"stream":"Step 2/2 : RUN ma"}{"stream":"ke\n"}` +
		`{"stream":" ---\u003e Running in 5678\n"}` +
		`{"stream":"compiling\r\nlinking\n\n"}` +
		`{"status":"Downloading","progressDetail":{"current":1,"total":9},"id":"layer"}` +
		`{"status":"Pull complete","progressDetail":{},"id":"layer"}` +
		`{"aux":{"ID":"` + id + `"}}` +
		`{"stream":"Successfully built ab0123456789\n"}`
	var events []engine.BuildEvent
	got, err := parseBuildStream(strings.NewReader(ok), func(ev engine.BuildEvent) { events = append(events, ev) })
	if err != nil {
		t.Fatal(err)
	}
	if got != id {
		t.Errorf("ID = %q, want %q", got, id)
	}
	want := []engine.BuildEvent{
		{Step: "Step 1/2 : FROM base"},
		{Stream: " ---> 1234"},
		{Step: "Step 2/2 : RUN make"},
		{Stream: " ---> Running in 5678"},
		{Stream: "compiling"},
		{Stream: "linking"},
		{Stream: "layer: Pull complete"},
		{Stream: "Successfully built ab0123456789"},
	}
	if !slices.Equal(events, want) {
		t.Errorf("events:\n got %+v\nwant %+v", events, want)
	}
}

func TestParseBuildStreamErrors(t *testing.T) {
	var long strings.Builder
	long.WriteString(`{"stream":"Step 1/1 : RUN spam\n"}`)
	for i := 1; i <= buildOutputTail+50; i++ {
		fmt.Fprintf(&long, `{"stream":"line %d\n"}`, i)
	}
	long.WriteString(`{"error":"spam failed"}`)
	wantLong := make([]string, 0, buildOutputTail)
	for i := 51; i <= buildOutputTail+50; i++ {
		wantLong = append(wantLong, fmt.Sprintf("line %d", i))
	}

	for _, tc := range []struct {
		name   string
		stream string
		want   engine.BuildError
	}{
		{
			name: "failing step",
			stream: `{"stream":"Step 1/2 : FROM base\n"}{"stream":"base output\n"}` +
				`{"stream":"Step 2/2 : RUN false\n"}{"stream":"about to fail\n"}{"stream":"no newline"}` +
				`{"errorDetail":{"code":1,"message":"The command '/bin/sh -c false' returned a non-zero code: 1"},"error":"The command '/bin/sh -c false' returned a non-zero code: 1"}`,
			want: engine.BuildError{
				Step:    "Step 2/2 : RUN false",
				Message: "The command '/bin/sh -c false' returned a non-zero code: 1",
				Output:  "about to fail\nno newline",
			},
		},
		{
			name:   "before the first step",
			stream: `{"errorDetail":{"message":"dockerfile parse error line 2: unknown instruction: FROBNICATE"}}`,
			want:   engine.BuildError{Message: "dockerfile parse error line 2: unknown instruction: FROBNICATE"},
		},
		{
			name:   "long output keeps the tail",
			stream: long.String(),
			want:   engine.BuildError{Step: "Step 1/1 : RUN spam", Message: "spam failed", Output: strings.Join(wantLong, "\n")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseBuildStream(strings.NewReader(tc.stream), func(engine.BuildEvent) {})
			var be *engine.BuildError
			if !errors.As(err, &be) {
				t.Fatalf("got %v, want *engine.BuildError", err)
			}
			if *be != tc.want {
				t.Errorf("got  %+v\nwant %+v", *be, tc.want)
			}
		})
	}

	// A stream that ends without the aux message names no image.
	_, err := parseBuildStream(strings.NewReader(`{"stream":"Step 1/1 : FROM base\n"}`), func(engine.BuildEvent) {})
	var be *engine.BuildError
	if err == nil || errors.As(err, &be) {
		t.Errorf("stream without an ID: got %v, want a plain error", err)
	}
}

func TestStreamDecoderLongLine(t *testing.T) {
	d := newStreamDecoder(strings.NewReader(""))
	chunk := strings.Repeat("x", maxLineBytes/2+1)
	if got := d.lines(chunk); len(got) != 0 {
		t.Fatalf("first half-line produced %d lines", len(got))
	}
	got := d.lines(chunk)
	if len(got) != 1 || len(got[0]) != 2*len(chunk) {
		t.Fatalf("an overlong line was not flushed: %d lines", len(got))
	}
	if _, ok := d.flush(); ok {
		t.Error("data left pending after an overlong line was flushed")
	}
}

func FuzzParseLoadStream(f *testing.F) {
	for _, s := range []string{
		`{"stream":"Loaded image: app:1.0\n"}`,
		`{"stream":"Loaded image ID: sha256:abc\n"}{"stream":"Loaded image: b:2"}`,
		`{"errorDetail":{"message":"bad"},"error":"bad"}`,
		`{"status":"Loading layer","progressDetail":{"current":1,"total":2},"id":"abc"}`,
		`{"stream":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		loaded, err := parseLoadStream(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		for _, l := range loaded {
			if strings.ContainsAny(l, "\n") {
				t.Errorf("loaded entry %q spans lines", l)
			}
		}
	})
}

func FuzzParseBuildStream(f *testing.F) {
	for _, s := range []string{
		`{"stream":"Step 1/2 : FROM base\n"}{"stream":"out\n"}{"aux":{"ID":"sha256:abc"}}`,
		`{"stream":"Step 1/1 : RUN x\n"}{"errorDetail":{"code":1,"message":"failed"},"error":"failed"}`,
		`{"status":"Pulling","id":"x"}{"aux":{"ID":5}}`,
		`{"aux":"x"}{"stream":"\r\n\n"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = parseBuildStream(strings.NewReader(string(data)), func(ev engine.BuildEvent) {
			if (ev.Step == "") == (ev.Stream == "") {
				t.Errorf("event %+v must carry exactly one of Step and Stream", ev)
			}
			if strings.Contains(ev.Step+ev.Stream, "\n") {
				t.Errorf("event %+v spans lines", ev)
			}
		})
	})
}

func TestGraceSeconds(t *testing.T) {
	for _, tc := range []struct {
		grace time.Duration
		want  int
	}{
		{-time.Second, 0},
		{0, 0},
		{time.Millisecond, 1},
		{time.Second, 1},
		{1500 * time.Millisecond, 2},
		{10 * time.Second, 10},
		{time.Duration(1<<63 - 1), 1<<31 - 1},
	} {
		if got := graceSeconds(tc.grace); got != tc.want {
			t.Errorf("graceSeconds(%v) = %d, want %d", tc.grace, got, tc.want)
		}
	}
}

func TestContainerConfig(t *testing.T) {
	spec := engine.ContainerSpec{
		Image:           "app:1",
		Cmd:             []string{"serve"},
		Env:             []string{"A=1"},
		User:            "1000:1000",
		Labels:          map[string]string{"k": "v"},
		Mounts:          []engine.Mount{{Source: "/host", Target: "/run/app", ReadOnly: true}},
		Init:            true,
		ReadOnlyRootfs:  true,
		Tmpfs:           map[string]string{"/tmp": "size=64m"},
		CapDrop:         []string{"ALL"},
		NoNewPrivileges: true,
		PidsLimit:       128,
		MemoryBytes:     256 << 20,
		NanoCPUs:        1e9,
		NetworkMode:     "none",
	}
	cfg, hc := containerConfig(spec)
	if cfg.Image != "app:1" || !slices.Equal(cfg.Cmd, []string{"serve"}) || cfg.User != "1000:1000" || cfg.Labels["k"] != "v" || !slices.Equal(cfg.Env, spec.Env) {
		t.Errorf("config = %+v", cfg)
	}
	if hc.Init == nil || !*hc.Init || !hc.ReadonlyRootfs || hc.Tmpfs["/tmp"] != "size=64m" ||
		!slices.Equal([]string(hc.CapDrop), []string{"ALL"}) || !slices.Equal(hc.SecurityOpt, []string{"no-new-privileges:true"}) ||
		hc.PidsLimit == nil || *hc.PidsLimit != 128 || hc.Memory != 256<<20 || hc.MemorySwap != 256<<20 ||
		hc.NanoCPUs != 1e9 || hc.NetworkMode != "none" {
		t.Errorf("host config = %+v", hc)
	}
	wantMount := mount.Mount{Type: mount.TypeBind, Source: "/host", Target: "/run/app", ReadOnly: true}
	if len(hc.Mounts) != 1 || hc.Mounts[0] != wantMount {
		t.Errorf("mounts = %+v, want [%+v]", hc.Mounts, wantMount)
	}

	// The zero spec leaves every limit to the engine.
	_, hc = containerConfig(engine.ContainerSpec{Image: "app:1"})
	zero := container.HostConfig{}
	if hc.Init != nil || hc.PidsLimit != nil || hc.Memory != 0 || hc.MemorySwap != 0 || hc.SecurityOpt != nil || hc.NetworkMode != zero.NetworkMode || hc.Mounts != nil {
		t.Errorf("zero spec host config = %+v", hc)
	}
}
