package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestFormats(t *testing.T) {
	tests := []struct{ got, want string }{
		{fmtUS(7.471), "7.5 µs"},
		{fmtUS(99.96), "100.0 µs"},
		{fmtUS(287.9), "288 µs"},
		{fmtUS(1500), "1.50 ms"},
		{fmtUS(12345), "12.3 ms"},
		{fmtUS(300000), "300 ms"},
		{fmtUS(2.5e6), "2.50 s"},
		{fmtMS(231.4), "231 ms"},
		{fmtMS(0.5), "500 µs"},
		{fmtSeconds(4.25), "4.2 s"},
		{fmtSeconds(125.5), "126 s"},
		{thousands(0), "0"},
		{thousands(999.6), "1,000"},
		{thousands(123456.7), "123,457"},
		{thousands(1234567), "1,234,567"},
		{thousands(-12345), "-12,345"},
		{tickUS(5000), "5 ms"},
		{tickUS(0.5), "0.5 µs"},
		{tickUS(2e6), "2 s"},
		{shortCount(150000), "150k"},
		{shortCount(2500000), "2.5M"},
		{shortCount(0), "0"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("case %d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func TestNiceStep(t *testing.T) {
	for _, tt := range []struct{ in, want float64 }{
		{0, 1}, {0.3, 0.5}, {1, 1}, {1.2, 2}, {3, 5}, {7, 10}, {16000, 20000}, {41000, 50000},
	} {
		if got := niceStep(tt.in); got != tt.want {
			t.Errorf("niceStep(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestTargets(t *testing.T) {
	lat := p50Below(30)
	if d, met := lat.check(29.9); d != "p50 < 30 µs" || met != "yes" {
		t.Errorf("29.9 µs against %q: %q", d, met)
	}
	if _, met := lat.check(30); met != "**no**" {
		t.Errorf("30 µs meets p50 < 30 µs")
	}
	rps := rpsAbove(69000, true)
	if d, met := rps.check(69000); d != "≥ 69,000 req/s" || met != "yes" {
		t.Errorf("69000 against %q: %q", d, met)
	}
	if _, met := rps.check(68999); met != "**no**" {
		t.Errorf("68999 meets ≥ 69,000")
	}
	var none *target
	if d, met := none.check(1); d != "" || met != "" {
		t.Errorf("no target renders %q, %q", d, met)
	}
	// A row checks its latency against a latency bound, its throughput
	// against a throughput bound.
	if _, met := lat.checkFigures(29, 1); met != "yes" {
		t.Errorf("p50 29 µs, 1 req/s against %q: %q", lat.desc, met)
	}
	if _, met := rps.checkFigures(1e6, 70000); met != "yes" {
		t.Errorf("p50 1 s, 70000 req/s against %q: %q", rps.desc, met)
	}
	if d, met := none.checkFigures(1, 1); d != "" || met != "" {
		t.Errorf("no target renders %q, %q", d, met)
	}
}

// TestRender renders the results in testdata/results and compares the
// report and the plot with the golden files. The results are a short run
// of scripts/benchmarks.sh --quick, plus a second run of the Go echo at c1
// (to exercise the medians) and Go benchmark outputs for the Python SDK,
// the runtime and a remote runtime (the last made up, as it does not exist
// yet).
func TestRender(t *testing.T) {
	dir := t.TempDir()
	md := filepath.Join(dir, "docs", "benchmarks.md")
	svg := filepath.Join(dir, "docs", "img", "latency-vs-concurrency.svg")
	if err := render(filepath.Join("testdata", "results"), md, svg); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ got, golden string }{
		{md, "benchmarks.md"},
		{svg, "latency-vs-concurrency.svg"},
	} {
		got, err := os.ReadFile(f.got)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", "golden", f.golden)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestRender -update to create it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (rerun with -update if intended):\n%s", f.got, path, got)
		}
	}
	report, _ := os.ReadFile(md)
	for _, want := range []string{
		"](img/latency-vs-concurrency.svg)", // the link resolves from docs/
		"| Raw socket ping-pong, 4-byte messages (the floor), c1 |",
		"| 9.1 µs | ×1.00 | ×0.19 | ×1.00 |", // the floor: CPU, both ratios
		"| Warm Execute, Go echo, c1, one busy process per core |",
		"| ≥ ½ quiet c64 req/s |",
		"| p50 ≤ ×1.5 two-process floor |",
		"| Load average at end | 1.52 1.10 0.87 |",
	} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestRenderReportsMissing(t *testing.T) {
	// Only the machine and the settings: every row is listed as missing,
	// nothing fails.
	src := filepath.Join("testdata", "results")
	dir := t.TempDir()
	for _, f := range []string{"machine.json", "settings.tsv", "commands.tsv"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := loadResults(dir)
	if err != nil {
		t.Fatal(err)
	}
	rep := buildReport(res, "img/x.svg")
	if len(rep.Path) != 0 || len(rep.Start) != 0 {
		t.Errorf("rows from no results: %+v %+v", rep.Path, rep.Start)
	}
	var md bytes.Buffer
	if err := renderMarkdown(&md, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Not measured in this run", "- Cold start, Go echo", "- Build, cold, Python echo", "no ratios"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if err := renderPlot(&bytes.Buffer{}, res, 0); err == nil {
		t.Error("plotting no warm runs succeeded")
	}
}

func TestLoadResultsRejectsInconsistentFiles(t *testing.T) {
	src := filepath.Join("testdata", "results")
	tests := []struct {
		name, file, content, want string
	}{
		{"first load with the image present", "load/go-first-9.json", `{"artifact": {"image_present": true}}`, "no first load"},
		{"warm run without a run", "warm/go-c1-9.json", `{"artifact": {}}`, "no run section"},
		{"cold run without cold starts", "cold/go.json", `{"artifact": {}}`, "no cold_start section"},
		{"malformed JSON", "warm/go-c1-9.json", `{`, "unexpected end"},
		{"malformed build time", "builds.tsv", "build.go.cold\tsoon\n", "build time of build.go.cold"},
		{"malformed TSV", "commands.tsv", "no tab here\n", "want KEY<TAB>VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tt.file), []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := loadResults(dir); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := loadResults(t.TempDir()); err == nil {
		t.Error("a results directory without machine.json loaded")
	}
}

func TestMissingSetting(t *testing.T) {
	res, err := loadResults(filepath.Join("testdata", "results"))
	if err != nil {
		t.Fatal(err)
	}
	delete(res.Settings, "reps")
	if err := renderMarkdown(&bytes.Buffer{}, buildReport(res, "x.svg")); err == nil || !strings.Contains(err.Error(), `"reps"`) {
		t.Errorf("rendering without a setting: %v", err)
	}
}
