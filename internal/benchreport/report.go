package main

import (
	_ "embed"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/template"

	"github.com/ociapp/ociapp/internal/bytesize"
	"github.com/ociapp/ociapp/protocol"
)

//go:embed benchmarks.md.tmpl
var reportTemplate string

// apps are the two example applications, by their key in the results.
var apps = []struct{ Key, Name string }{
	{"go", "Go echo"},
	{"python", "Python echo"},
}

// report is what the template renders.
type report struct {
	Machine  machine
	Settings map[string]string
	Floor    string // the floor's figures, in words
	Path     []pathRow
	Remote   []pathRow
	CPUBound []pathRow
	Hosts    []startRow // the host clients against the in-process runtime
	Start    []startRow
	Curves   []curve
	GoBench  []benchRow
	Commands []commandRow
	Missing  []string
	Plot     string  // the plot's path relative to the report
	BusyPoll string  // the protocol client's default busy-poll budget
	floorP50 float64 // the raw socket ping-pong's p50 (µs), for the ratios and the plot; 0: not measured
}

// pathRow is a row of the request path table.
type pathRow struct {
	Measure, P50, P99, RPS, P50Ratio, RPSRatio, Target, Met string
	// CPU is the CPU time per request; P50Cross the p50 as a multiple of
	// the cross-process floor's.
	CPU, P50Cross string
	Cmd           int
}

// startRow is a row of the start, load, build and size table.
type startRow struct {
	Measure, Figure, Detail, Target, Met string
	Cmd                                  int
}

type curve struct {
	App    string
	Points []curvePoint
}

type curvePoint struct {
	Concurrency             int
	P50, P90, P99, Max, RPS string
	P50Ratio, Containers    string
	Failed                  int64
}

type benchRow struct {
	Pkg, Name, Metrics string
	Runs               int
}

type commandRow struct {
	N       int
	Command string
}

// builder assembles a report, numbering commands as rows cite them.
type builder struct {
	res  *results
	rep  report
	cmds map[string]int
	// floorRPS is the raw socket ping-pong's req/s (its p50 is
	// rep.floorP50); crossP50 the p50 of the same between two processes.
	floorRPS, crossP50 float64
}

func buildReport(res *results, plot string) report {
	b := &builder{res: res, cmds: map[string]int{}}
	b.rep.Machine = res.Machine
	b.rep.Settings = res.Settings
	b.rep.Plot = plot
	b.rep.BusyPoll = fmtUS(float64(protocol.DefaultBusyPoll.Microseconds()))
	b.requestPath()
	b.hostClients()
	b.startTable()
	b.curves()
	for _, gb := range res.GoBench {
		var parts []string
		for _, u := range slices.Sorted(maps.Keys(gb.Metrics)) {
			parts = append(parts, fmt.Sprintf("%s %s", trimFloat(gb.Metrics[u]), u))
		}
		b.rep.GoBench = append(b.rep.GoBench, benchRow{Pkg: gb.Pkg, Name: gb.Name, Metrics: strings.Join(parts, ", "), Runs: gb.Runs})
	}
	return b.rep
}

// cmd returns the number of the command measured under key.
func (b *builder) cmd(key string) int {
	if n, ok := b.cmds[key]; ok {
		return n
	}
	text, ok := b.res.Commands[key]
	if !ok {
		text = "(not recorded)"
	}
	n := len(b.rep.Commands) + 1
	b.cmds[key] = n
	b.rep.Commands = append(b.rep.Commands, commandRow{N: n, Command: text})
	return n
}

// findGoBench returns the Go benchmark called name in a package whose path
// ends in pkgSuffix, or nil.
func findGoBench(res *results, pkgSuffix, name string) *goBench {
	for i, gb := range res.GoBench {
		if gb.Name == name && strings.HasSuffix(gb.Pkg, pkgSuffix) {
			return &res.GoBench[i]
		}
	}
	return nil
}

// target is a bound on a figure: below (latency) or at least (throughput).
type target struct {
	desc  string
	below bool
	bound float64
}

func (t *target) check(v float64) (string, string) {
	if t == nil {
		return "", ""
	}
	ok := v >= t.bound
	if t.below {
		ok = v < t.bound
	}
	if ok {
		return t.desc, "yes"
	}
	return t.desc, "**no**"
}

// checkFigures checks the figure t bounds: the p50 for a latency bound,
// the throughput otherwise.
func (t *target) checkFigures(p50, rps float64) (string, string) {
	if t != nil && !t.below {
		return t.check(rps)
	}
	return t.check(p50)
}

func p50Below(us float64) *target {
	return &target{desc: "p50 < " + tickUS(us), below: true, bound: us}
}

// atMost is a target met by a value no greater than bound.
func atMost(desc string, bound float64) *target {
	// check's "below" is strict; the margin lets bound itself pass.
	return &target{desc: desc, below: true, bound: bound + 1e-9}
}

func rpsAbove(rps float64, orEqual bool) *target {
	op := ">"
	if orEqual {
		op = "≥"
	}
	// "> x" and "≥ x" differ by one request per second; both check v >= x.
	return &target{desc: fmt.Sprintf("%s %s req/s", op, thousands(rps)), bound: rps}
}

func (b *builder) requestPath() {
	floor := findGoBench(b.res, "/ociapp", "RawPingPong")
	if floor == nil {
		b.rep.Missing = append(b.rep.Missing, "the raw socket ping-pong floor (BenchmarkRawPingPong), so no ratios")
	} else {
		b.rep.floorP50, b.floorRPS = floor.Metrics["p50-µs"], floor.Metrics["req/s"]
		b.rep.Floor = fmt.Sprintf("p50 %s, %s req/s", fmtUS(b.rep.floorP50), thousands(b.floorRPS))
	}
	if cross := findGoBench(b.res, "/ociapp", "RawPingPongCrossProcess"); cross != nil {
		b.crossP50 = cross.Metrics["p50-µs"]
	}
	goRow := func(measure, pkgSuffix, name, cmdKey string, t *target) {
		gb := findGoBench(b.res, pkgSuffix, name)
		if gb == nil {
			b.rep.Missing = append(b.rep.Missing, fmt.Sprintf("%s (Benchmark%s)", measure, name))
			return
		}
		row := b.goBenchRow(measure, *gb, cmdKey)
		row.Target, row.Met = t.checkFigures(gb.Metrics["p50-µs"], gb.Metrics["req/s"])
		b.rep.Path = append(b.rep.Path, row)
	}
	goRow("Raw socket ping-pong, 4-byte messages (the floor), c1", "/ociapp", "RawPingPong", "gobench.protocol", nil)
	goRow("Raw socket ping-pong between two processes, c1", "/ociapp", "RawPingPongCrossProcess", "gobench.protocol", nil)
	goRow("Raw socket ping-pong between two processes, client polling, c1", "/ociapp", "RawPingPongCrossProcessPolling", "gobench.protocol", nil)
	goRow("Raw socket ping-pong through a relay process (the floor through a daemon of its own), c1", "/ociapp", "RawPingPongRelay/blocking", "gobench.protocol", nil)
	goRow("Raw socket ping-pong through a relay process, client polling, c1", "/ociapp", "RawPingPongRelay/client-polling", "gobench.protocol", nil)
	goRow("Protocol round trip, Go client to Go SDK server, c1", "/ociapp", "RoundTrip/c1", "gobench.protocol", p50Below(20))
	goRow("Protocol round trip, pipelined, c64", "/ociapp", "RoundTrip/c64", "gobench.protocol", rpsAbove(100000, false))
	goRow("Python SDK echo in a container, Go client, c1", "/python", "PythonEcho/c1", "gobench.python", p50Below(60))
	goRow("Python SDK echo in a container, Go client, c64", "/python", "PythonEcho/c64", "gobench.python", rpsAbove(80000, false))
	goRow("Python SDK echo in a container, Go client without busy polling, c1", "/python", "PythonEcho/c1-nopoll", "gobench.python", nil)
	goRow("Python SDK echo in a container, Go client without busy polling, c64", "/python", "PythonEcho/c64-nopoll", "gobench.python", nil)
	goRow("Runtime request path, in-process Go server, c1", "/runtime", "ExecuteOverhead/c1", "gobench.runtime", nil)
	goRow("Runtime request path, in-process Go server, c64", "/runtime", "ExecuteOverhead/c64", "gobench.runtime", nil)

	// The Go echo's targets are relative: within 1.5 times the
	// cross-process floor at c1, at least the Python echo's throughput at
	// c64, both from the same run.
	var goTargets [2]*target
	if b.crossP50 > 0 {
		goTargets[0] = atMost("p50 ≤ ×1.5 two-process floor", 1.5*b.crossP50)
	}
	if py := b.warmAt("python", 64); py != nil {
		goTargets[1] = &target{desc: "≥ Python echo c64 req/s", bound: py.RPS}
	}
	warmTargets := map[string][2]*target{
		"go":     goTargets,
		"python": {p50Below(80), rpsAbove(69000, true)},
	}
	for _, a := range apps {
		for i, c := range []int{1, 64} {
			measure := fmt.Sprintf("Warm Execute, %s, c%d", a.Name, c)
			row, p := b.warmRow(measure, a.Key, c)
			if p == nil {
				continue
			}
			row.Target, row.Met = warmTargets[a.Key][i].checkFigures(p.P50, p.RPS)
			b.rep.Path = append(b.rep.Path, row)
		}
	}
	for _, a := range apps {
		if row, p := b.warmRow(fmt.Sprintf("Warm Execute, %s, c1, without busy polling", a.Name), a.Key+"-nopoll", 1); p != nil {
			b.rep.Path = append(b.rep.Path, row)
		}
	}
	// Under load: one busy process per core in the background. At c64 a
	// row must keep at least half the quiet throughput.
	for _, a := range apps {
		quiet := b.warmAt(a.Key, 64)
		for _, variant := range []struct{ key, words string }{{"-load", ""}, {"-load-nopoll", ", without busy polling"}} {
			for _, c := range []int{1, 64} {
				measure := fmt.Sprintf("Warm Execute, %s, c%d, one busy process per core%s", a.Name, c, variant.words)
				row, p := b.warmRow(measure, a.Key+variant.key, c)
				if p == nil {
					continue
				}
				if c == 64 && quiet != nil {
					t := &target{desc: "≥ ½ quiet c64 req/s", bound: quiet.RPS / 2}
					row.Target, row.Met = t.check(p.RPS)
				}
				b.rep.Path = append(b.rep.Path, row)
			}
		}
	}

	b.rep.Remote = b.benchRows("gobench.remote", func(gb goBench) bool {
		return strings.HasSuffix(gb.Pkg, "/remote") || strings.HasSuffix(gb.Pkg, "/daemon")
	})
	b.rep.CPUBound = b.benchRows("gobench.cpubound", func(gb goBench) bool {
		return strings.HasSuffix(gb.Pkg, "/runtime") && strings.HasPrefix(gb.Name, "CPUBound/")
	})
}

// benchRows makes a row of every Go benchmark that match accepts.
func (b *builder) benchRows(cmdKey string, match func(goBench) bool) []pathRow {
	var rows []pathRow
	for _, gb := range b.res.GoBench {
		if match(gb) {
			rows = append(rows, b.goBenchRow(gb.Name, gb, cmdKey))
		}
	}
	return rows
}

// goBenchRow is the request path row of a Go benchmark.
func (b *builder) goBenchRow(measure string, gb goBench, cmdKey string) pathRow {
	m := gb.Metrics
	row := b.figuresRow(measure, cmdKey, m["p50-µs"], m["p99-µs"], m["req/s"])
	cpu, ok := m["cpu-µs"]
	if !ok {
		return row
	}
	row.CPU = fmtUS(cpu)
	if ctr, ok := m["ctr-cpu-µs"]; ok {
		// The benchmark's process, a daemon's own process when it has
		// one, and the containers.
		parts := []float64{cpu}
		if d, ok := m["daemon-cpu-µs"]; ok {
			parts = append(parts, d)
		}
		parts = append(parts, ctr)
		total, terms := 0.0, make([]string, len(parts))
		for i, v := range parts {
			total += v
			terms[i] = trimFloat(round3(v))
		}
		row.CPU = fmt.Sprintf("%s (%s)", fmtUS(total), strings.Join(terms, " + "))
	}
	return row
}

// figuresRow is a request path row of the figures given, "–" for those
// not measured (0), with the p50 and req/s as multiples of the floors'.
func (b *builder) figuresRow(measure, cmdKey string, p50, p99, rps float64) pathRow {
	dash := func(v float64, format func(float64) string) string {
		if v <= 0 {
			return "–"
		}
		return format(v)
	}
	return pathRow{
		Measure: measure, P50: dash(p50, fmtUS), P99: dash(p99, fmtUS), RPS: dash(rps, thousands), CPU: "–",
		P50Ratio: ratio(p50, b.rep.floorP50), RPSRatio: ratio(rps, b.floorRPS), P50Cross: ratio(p50, b.crossP50),
		Cmd: b.cmd(cmdKey),
	}
}

// warmRow is the request path row of a bench point, or nil (and the
// measure noted missing) when it was not measured.
func (b *builder) warmRow(measure, key string, c int) (pathRow, *warmPoint) {
	p := b.warmAt(key, c)
	if p == nil {
		b.rep.Missing = append(b.rep.Missing, measure)
		return pathRow{}, nil
	}
	row := b.figuresRow(measure, fmt.Sprintf("warm.%s.c%d", key, c), p.P50, p.P99, p.RPS)
	switch {
	case p.CPUCaller >= 0 && p.CPUContainers >= 0:
		row.CPU = fmt.Sprintf("%s (%s + %s)", fmtUS(p.CPUCaller+p.CPUContainers), trimFloat(round3(p.CPUCaller)), trimFloat(round3(p.CPUContainers)))
	case p.CPUCaller >= 0:
		row.CPU = fmtUS(p.CPUCaller) + " (caller)"
	}
	return row, p
}

// round3 rounds v to three significant figures.
func round3(v float64) float64 {
	if v <= 0 {
		return v
	}
	scale := math.Pow(10, 2-math.Floor(math.Log10(v)))
	return math.Round(v*scale) / scale
}

// ratio is v as a multiple of floor, "–" when either is unknown.
func ratio(v, floor float64) string {
	if v <= 0 || floor <= 0 {
		return "–"
	}
	return fmt.Sprintf("×%.2f", v/floor)
}

func (b *builder) warmAt(app string, c int) *warmPoint {
	for i, p := range b.res.Warm[app] {
		if p.Concurrency == c {
			return &b.res.Warm[app][i]
		}
	}
	return nil
}

func (b *builder) startTable() {
	coldTargets := map[string]float64{"go": 300, "python": 600}
	for _, a := range apps {
		measure := "Cold start, " + a.Name
		cold, ok := b.res.Cold[a.Key]
		if !ok || len(cold.ColdStart.SamplesMS) == 0 {
			b.rep.Missing = append(b.rep.Missing, measure)
			continue
		}
		c := cold.ColdStart
		t := &target{desc: "p50 < " + tickUS(coldTargets[a.Key]*1e3), below: true, bound: coldTargets[a.Key]}
		row := startRow{
			Measure: measure,
			Figure:  "p50 " + fmtMS(c.P50MS),
			Detail:  fmt.Sprintf("min %s, max %s, %d runs", fmtMS(c.MinMS), fmtMS(c.MaxMS), len(c.SamplesMS)),
			Cmd:     b.cmd("cold." + a.Key),
		}
		if c.Failed > 0 {
			row.Detail += fmt.Sprintf(", %d failed", c.Failed)
		}
		row.Target, row.Met = t.check(c.P50MS)
		b.rep.Start = append(b.rep.Start, row)
	}
	for _, a := range apps {
		lr := b.res.Load[a.Key]
		b.loadRow("Artifact load, first time, "+a.Name, "load."+a.Key+".first", lr.First, "engine load",
			func(ar artifactJSON) (float64, float64) { return ar.LoadMS, ar.VerifyMS + ar.CheckMS + ar.LoadMS })
		b.loadRow("Artifact load, already loaded, "+a.Name, "load."+a.Key+".present", lr.Present, "image check",
			func(ar artifactJSON) (float64, float64) { return ar.CheckMS, ar.VerifyMS + ar.CheckMS })
	}
	for _, kind := range []struct{ key, what string }{{"cold", "cold"}, {"code", "code-only change"}} {
		for _, a := range apps {
			key := "build." + a.Key + "." + kind.key
			measure := fmt.Sprintf("Build, %s, %s", kind.what, a.Name)
			s, ok := b.res.Builds[key]
			if !ok {
				b.rep.Missing = append(b.rep.Missing, measure)
				continue
			}
			b.rep.Start = append(b.rep.Start, startRow{Measure: measure, Figure: fmtSeconds(s), Detail: buildDetail[key], Cmd: b.cmd(key)})
		}
	}
	for _, a := range apps {
		var size int64
		if lr := b.res.Load[a.Key]; len(lr.Present) > 0 {
			size = lr.Present[0].Artifact.SizeBytes
		} else if c, ok := b.res.Cold[a.Key]; ok {
			size = c.Artifact.SizeBytes
		}
		if size == 0 {
			b.rep.Missing = append(b.rep.Missing, "Artifact size, "+a.Name)
			continue
		}
		b.rep.Start = append(b.rep.Start, startRow{
			Measure: "Artifact size, " + a.Name,
			Figure:  bytesize.Format(size),
			Detail:  thousands(float64(size)) + " bytes",
			Cmd:     b.cmd("build." + a.Key + ".cold"),
		})
	}
}

// hostClients compares the clients of a daemon with the runtime in
// process, from the same run: the Python client (pyclient.json) with the
// Go runtime's own Warm Execute and cold start of the Python echo, and
// the Go remote executor with BenchmarkRemoteOverhead's in-process rows.
func (b *builder) hostClients() {
	py := b.res.PyClient
	c1, c64 := b.warmAt("python", 1), b.warmAt("python", 64)
	switch {
	case py == nil:
		b.rep.Missing = append(b.rep.Missing, "the Python client through a daemon (scripts/bench-python-client.sh)")
	case c1 == nil || c64 == nil:
		b.rep.Missing = append(b.rep.Missing, "the Python client's comparison: Warm Execute of the Python echo at c1 and c64")
	default:
		row := startRow{
			Measure: "Python client → daemon → Python echo, c1",
			Figure:  "p50 " + fmtUS(py.C1.P50US),
			Detail: fmt.Sprintf("Go runtime in process %s (%s); client CPU %s per request",
				fmtUS(c1.P50), signedUS(py.C1.P50US-c1.P50), fmtUS(py.C1.ClientCPUPerRq)),
			Cmd: b.cmd("pyclient"),
		}
		b.hostRow(row, atMost("p50 ≤ in process + 40 µs", c1.P50+40), py.C1.P50US)
		row = startRow{
			Measure: "Python client → daemon → Python echo, 64 asyncio tasks",
			Figure:  thousands(py.C64.RPS) + " req/s",
			Detail: fmt.Sprintf("Go runtime in process at c64 %s req/s (%.0f%%); client CPU %s per request",
				thousands(c64.RPS), 100*py.C64.RPS/c64.RPS, fmtUS(py.C64.ClientCPUPerRq)),
			Cmd: b.cmd("pyclient"),
		}
		b.hostRow(row, &target{desc: "≥ 50% of in process", bound: c64.RPS / 2}, py.C64.RPS)
	}
	if cold, ok := b.res.Cold["python"]; py != nil && ok && cold.ColdStart != nil {
		for _, f := range []struct {
			measure      string
			start, first float64
		}{
			{"Fresh Python `Runtime()`, new state directory: first execute", py.FreshStartMS, py.FreshFirstMS},
			{"Fresh Python `Runtime()` on the state the first left: first execute", py.FreshAgainStartMS, py.FreshAgainFirstMS},
		} {
			row := startRow{
				Measure: f.measure,
				Figure:  fmtMS(f.first),
				Detail: fmt.Sprintf("after %s starting the daemon; in-process cold start p50 %s (%s)",
					fmtMS(f.start), fmtMS(cold.ColdStart.P50MS), signedUS((f.first-cold.ColdStart.P50MS)*1e3)),
				Cmd: b.cmd("pyclient"),
			}
			b.hostRow(row, atMost("≤ cold start + 100 ms", cold.ColdStart.P50MS+100), f.first)
		}
	}
	in1, in64 := findGoBench(b.res, "/daemon", "RemoteOverhead/in-process/c1"), findGoBench(b.res, "/daemon", "RemoteOverhead/in-process/c64")
	for _, d := range []struct{ name, words string }{
		{"daemon", "Go remote executor → daemon (in the benchmark's process)"},
		{"daemon-process", "Go remote executor → daemon in a process of its own"},
	} {
		r1, r64 := findGoBench(b.res, "/daemon", "RemoteOverhead/"+d.name+"/c1"), findGoBench(b.res, "/daemon", "RemoteOverhead/"+d.name+"/c64")
		if in1 == nil || in64 == nil || r1 == nil || r64 == nil {
			b.rep.Missing = append(b.rep.Missing, d.words+" (BenchmarkRemoteOverhead)")
			continue
		}
		p50, inP50 := r1.Metrics["p50-µs"], in1.Metrics["p50-µs"]
		row := startRow{
			Measure: d.words + ", c1",
			Figure:  "p50 " + fmtUS(p50),
			Detail:  fmt.Sprintf("in process %s (%s)", fmtUS(inP50), signedUS(p50-inP50)),
			Cmd:     b.cmd("gobench.remote"),
		}
		b.hostRow(row, atMost("p50 ≤ in process + 25 µs", inP50+25), p50)
		rps, inRPS := r64.Metrics["req/s"], in64.Metrics["req/s"]
		row = startRow{
			Measure: d.words + ", c64",
			Figure:  thousands(rps) + " req/s",
			Detail:  fmt.Sprintf("in process %s req/s (%.0f%%)", thousands(inRPS), 100*rps/inRPS),
			Cmd:     b.cmd("gobench.remote"),
		}
		b.hostRow(row, &target{desc: "≥ 60% of in process", bound: 0.6 * inRPS}, rps)
	}
}

// hostRow adds row to the host clients' table, checked against t with v.
func (b *builder) hostRow(row startRow, t *target, v float64) {
	row.Target, row.Met = t.check(v)
	b.rep.Hosts = append(b.rep.Hosts, row)
}

// signedUS formats a difference of microseconds with its sign.
func signedUS(v float64) string {
	if v < 0 {
		return "−" + fmtUS(-v)
	}
	return "+" + fmtUS(v)
}

// loadRow adds the row of an app's artifact loads: the median total, its
// verification and its other step, named step; parts gives a run's step
// and total.
func (b *builder) loadRow(measure, cmdKey string, runs []benchJSON, step string, parts func(artifactJSON) (step, total float64)) {
	if len(runs) == 0 {
		b.rep.Missing = append(b.rep.Missing, measure)
		return
	}
	var totals, verifies, steps []float64
	for _, r := range runs {
		s, t := parts(r.Artifact)
		totals, verifies, steps = append(totals, t), append(verifies, r.Artifact.VerifyMS), append(steps, s)
	}
	b.rep.Start = append(b.rep.Start, startRow{
		Measure: measure,
		Figure:  fmtMS(median(totals)),
		Detail:  fmt.Sprintf("verify %s + %s %s; median of %d", fmtMS(median(verifies)), step, fmtMS(median(steps)), len(runs)),
		Cmd:     b.cmd(cmdKey),
	})
}

var buildDetail = map[string]string{
	"build.go.cold":     "empty Go build cache",
	"build.go.code":     "one source line changed, warm Go build cache",
	"build.python.cold": "no cached build step; base image present",
	"build.python.code": "one source line changed, engine build cache warm",
}

func (b *builder) curves() {
	for _, a := range apps {
		pts := b.res.Warm[a.Key]
		if len(pts) == 0 {
			continue
		}
		c := curve{App: a.Name}
		for _, p := range pts {
			c.Points = append(c.Points, curvePoint{
				Concurrency: p.Concurrency,
				P50:         fmtUS(p.P50), P90: fmtUS(p.P90), P99: fmtUS(p.P99), Max: fmtUS(p.Max),
				RPS:        thousands(p.RPS),
				P50Ratio:   ratio(p.P50, b.rep.floorP50),
				Containers: fmt.Sprint(p.Containers),
				Failed:     p.Failed,
			})
		}
		b.rep.Curves = append(b.rep.Curves, c)
	}
}

func renderMarkdown(w io.Writer, rep report) error {
	t, err := template.New("report").Option("missingkey=error").Funcs(template.FuncMap{
		// cell makes text safe inside a Markdown table cell.
		"cell": func(s string) string { return strings.ReplaceAll(s, "|", `\|`) },
		"setting": func(name string) (string, error) {
			v, ok := rep.Settings[name]
			if !ok {
				return "", fmt.Errorf("settings.tsv has no %q", name)
			}
			return v, nil
		},
	}).Parse(reportTemplate)
	if err != nil {
		return err
	}
	return t.Execute(w, rep)
}

// fmtUS formats microseconds in the unit that suits them, with three
// significant digits or so.
func fmtUS(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f s", v/1e6)
	case v >= 1e5:
		return fmt.Sprintf("%.0f ms", v/1e3)
	case v >= 1e4:
		return fmt.Sprintf("%.1f ms", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.2f ms", v/1e3)
	case v >= 100:
		return fmt.Sprintf("%.0f µs", v)
	}
	return fmt.Sprintf("%.1f µs", v)
}

func fmtMS(v float64) string { return fmtUS(v * 1e3) }

func fmtSeconds(s float64) string {
	if s >= 100 {
		return fmt.Sprintf("%.0f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}

// thousands rounds v and groups its digits: 123456.7 -> "123,457".
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", math.Round(v))
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// trimFloat prints v with up to 4 significant decimals and no trailing zeros.
func trimFloat(v float64) string {
	s := fmt.Sprintf("%.4g", v)
	if math.Abs(v) >= 1e4 {
		s = fmt.Sprintf("%.0f", v)
	}
	return s
}
