package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// goBench is one benchmark of `go test -bench` output, its metrics the
// medians over the runs (-count) found.
type goBench struct {
	Name    string // without the -GOMAXPROCS suffix, e.g. "RoundTrip/c64"
	Pkg     string
	Runs    int
	Metrics map[string]float64 // unit -> median, e.g. "p50-µs", "req/s", "ns/op"
}

// procsSuffix is the "-N" GOMAXPROCS suffix go test appends to names.
var procsSuffix = regexp.MustCompile(`-\d+$`)

// parseGoBench reads `go test -bench` output: "pkg:" lines name the
// package of the benchmarks after them; "BenchmarkX-N  iters  v unit ..."
// lines are results. Other lines are ignored.
func parseGoBench(r io.Reader) ([]goBench, error) {
	type key struct{ pkg, name string }
	samples := map[key]map[string][]float64{}
	runs := map[key]int{}
	var order []key
	pkg := ""
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if p, ok := strings.CutPrefix(text, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		fields := strings.Fields(text)
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") || len(fields)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			continue // a benchmark's log line, not a result
		}
		k := key{pkg, procsSuffix.ReplaceAllString(strings.TrimPrefix(fields[0], "Benchmark"), "")}
		if samples[k] == nil {
			samples[k] = map[string][]float64{}
			order = append(order, k)
		}
		runs[k]++
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: metric %q of %s is not a number", line, fields[i], fields[0])
			}
			samples[k][fields[i+1]] = append(samples[k][fields[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := make([]goBench, 0, len(order))
	for _, k := range order {
		b := goBench{Name: k.name, Pkg: k.pkg, Runs: runs[k], Metrics: map[string]float64{}}
		for unit, vs := range samples[k] {
			b.Metrics[unit] = median(vs)
		}
		out = append(out, b)
	}
	return out, nil
}

// median of vs (the mean of the middle two for an even count); vs is
// sorted in place.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}
