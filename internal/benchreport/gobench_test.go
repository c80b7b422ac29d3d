package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/ociapp/ociapp
cpu: AMD EPYC
BenchmarkRoundTrip/c1-2  	   84315	     14252 ns/op	        11.30 p50-µs	     70167 req/s
BenchmarkRoundTrip/c1-2  	   76557	     14061 ns/op	        11.35 p50-µs	     71119 req/s
BenchmarkRoundTrip/c1-2  	   80000	     14100 ns/op	        11.90 p50-µs	     70000 req/s
BenchmarkRawPingPong-2   	  152942	      7923 ns/op	         7.471 p50-µs	    126218 req/s
BenchmarkRawPingPong-2   	  153543	      7756 ns/op	         7.491 p50-µs	    128925 req/s
BenchmarkLogs
    bench_test.go:10: a log line, not a result
PASS
ok  	github.com/ociapp/ociapp	7.633s
goos: linux
pkg: github.com/ociapp/ociapp/runtime
BenchmarkExecuteOverhead/c64-16   	  100	  5000 ns/op	  300.5 p50-µs	  900.25 p99-µs	  150000 req/s
`
	got, err := parseGoBench(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []goBench{
		{Name: "RoundTrip/c1", Pkg: "github.com/ociapp/ociapp", Runs: 3,
			Metrics: map[string]float64{"ns/op": 14100, "p50-µs": 11.35, "req/s": 70167}},
		{Name: "RawPingPong", Pkg: "github.com/ociapp/ociapp", Runs: 2,
			Metrics: map[string]float64{"ns/op": (7923 + 7756) / 2.0, "p50-µs": (7.471 + 7.491) / 2, "req/s": (126218 + 128925) / 2.0}},
		{Name: "ExecuteOverhead/c64", Pkg: "github.com/ociapp/ociapp/runtime", Runs: 1,
			Metrics: map[string]float64{"ns/op": 5000, "p50-µs": 300.5, "p99-µs": 900.25, "req/s": 150000}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsed\n got %+v\nwant %+v", got, want)
	}
}

func TestParseGoBenchBadMetric(t *testing.T) {
	_, err := parseGoBench(strings.NewReader("pkg: x\nBenchmarkX-2  10  abc ns/op\n"))
	if err == nil || !strings.Contains(err.Error(), `line 2: metric "abc"`) {
		t.Errorf("error %v, want one naming line 2 and the metric", err)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{3, 1}, 2},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseGoBench(f *testing.F) {
	f.Add("pkg: x\nBenchmarkA-2  10  5 ns/op  1.5 p50-µs\nBenchmarkA-2  10  7 ns/op  2.5 p50-µs\n")
	f.Add("BenchmarkB/c64-16   1   2 req/s\n")
	f.Add("BenchmarkC-2 x 1 y\nBenchmark\n\n")
	f.Add("BenchmarkD-2  10  NaN ns/op\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseGoBench(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, b := range got {
			if b.Runs < 1 || len(b.Metrics) == 0 {
				t.Fatalf("benchmark %+v without runs or metrics", b)
			}
		}
	})
}
