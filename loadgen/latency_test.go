package loadgen

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestSummarizeExact(t *testing.T) {
	us := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Microsecond
		}
		return out
	}
	seq := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			// Reversed, so that the summary has to sort.
			out[i] = time.Duration(n-i) * time.Microsecond
		}
		return out
	}
	tests := []struct {
		name                          string
		in                            []time.Duration
		min, mean, p50, p90, p99, max time.Duration
	}{
		{name: "empty", in: nil},
		{name: "one", in: us(7), min: 7000, mean: 7000, p50: 7000, p90: 7000, p99: 7000, max: 7000},
		// Nearest rank: p50 of 2 values is rank ceil(1.0) = 1.
		{name: "two", in: us(30, 10), min: 10000, mean: 20000, p50: 10000, p90: 30000, p99: 30000, max: 30000},
		{name: "four", in: us(4, 1, 3, 2), min: 1000, mean: 2500, p50: 2000, p90: 4000, p99: 4000, max: 4000},
		// 1..10: p50 rank 5, p90 rank 9, p99 rank ceil(9.9) = 10.
		{name: "ten", in: seq(10), min: 1000, mean: 5500, p50: 5000, p90: 9000, p99: 10000, max: 10000},
		// 1..100: ranks 50, 90, 99.
		{name: "hundred", in: seq(100), min: 1000, mean: 50500, p50: 50000, p90: 90000, p99: 99000, max: 100000},
		// 1..1000: ranks 500, 900, 990.
		{name: "thousand", in: seq(1000), min: 1000, mean: 500500, p50: 500000, p90: 900000, p99: 990000, max: 1000000},
		{name: "outlier", in: append(us(10, 10, 10, 10, 10, 10, 10, 10, 10), 5*time.Second),
			min: 10000, mean: (9*10000 + 5*time.Second) / 10, p50: 10000, p90: 10000, p99: 5 * time.Second, max: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Summarize(tt.in)
			want := Summary{Count: int64(len(tt.in)), Exact: true, Min: tt.min, Mean: tt.mean, P50: tt.p50, P90: tt.p90, P99: tt.p99, Max: tt.max}
			if s != want {
				t.Errorf("summary\n got %+v\nwant %+v", s, want)
			}
		})
	}
}

func TestBucketsCoverValuesWithinError(t *testing.T) {
	check := func(v int64) {
		t.Helper()
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside [0, %d)", v, i, numBuckets)
		}
		if v >= 1<<maxTrackedLog {
			return
		}
		mid := bucketMid(i)
		if rel := math.Abs(float64(mid-v)) / float64(v); v > 0 && rel > histRelError {
			t.Fatalf("value %d: bucket %d midpoint %d is off by %.4f%%, more than %.4f%%", v, i, mid, 100*rel, 100*histRelError)
		}
		if v < 2*subBuckets && mid != v {
			t.Fatalf("value %d below %d must be exact, got %d", v, 2*subBuckets, mid)
		}
	}
	for v := range int64(100000) {
		check(v)
	}
	for shift := range maxTrackedLog + 2 {
		base := int64(1) << shift
		for _, d := range []int64{-1, 0, 1} {
			if base+d >= 0 {
				check(base + d)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(rng.Int64N(1 << maxTrackedLog))
	}
	check(math.MaxInt64)
}

func TestBucketsAreOrdered(t *testing.T) {
	// Percentile lookup walks buckets in index order, so bucket order must
	// be value order.
	prev := -1
	for v := int64(0); v < 1<<maxTrackedLog; v = v + 1 + v/300 {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d, below the bucket of a smaller value (%d)", v, i, prev)
		}
		prev = i
	}
	for i := 1; i < numBuckets; i++ {
		if bucketMid(i) <= bucketMid(i-1) {
			t.Fatalf("bucket %d midpoint %d is not above bucket %d midpoint %d", i, bucketMid(i), i-1, bucketMid(i-1))
		}
	}
}

func TestHistogramMatchesExact(t *testing.T) {
	dists := []struct {
		name string
		gen  func(*rand.Rand) time.Duration
	}{
		{"uniform 10-100µs", func(r *rand.Rand) time.Duration { return time.Duration(10000 + r.Int64N(90000)) }},
		{"lognormal around 50µs", func(r *rand.Rand) time.Duration {
			return time.Duration(50000 * math.Exp(r.NormFloat64()))
		}},
		{"bimodal with slow tail", func(r *rand.Rand) time.Duration {
			if r.IntN(100) < 3 {
				return time.Duration(200e6 + r.Int64N(100e6))
			}
			return time.Duration(20000 + r.Int64N(5000))
		}},
		{"tiny values", func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(300)) }},
	}
	for _, d := range dists {
		t.Run(d.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			vals := make([]time.Duration, 50001)
			// Split over three histograms to exercise merging.
			hs := []*histogram{new(histogram), new(histogram), new(histogram)}
			for i := range vals {
				vals[i] = d.gen(rng)
				hs[i%3].record(vals[i])
			}
			h := new(histogram)
			for _, x := range hs {
				h.merge(x)
			}
			got, want := h.summary(), Summarize(vals)
			if got.Exact || got.RelError != histRelError || got.Count != want.Count {
				t.Errorf("histogram summary: exact %v, error %v, count %d; want false, %v, %d", got.Exact, got.RelError, got.Count, histRelError, want.Count)
			}
			if got.Min != want.Min || got.Max != want.Max {
				t.Errorf("min/max = %v/%v, want exact %v/%v", got.Min, got.Max, want.Min, want.Max)
			}
			if rel := math.Abs(float64(got.Mean-want.Mean)) / float64(want.Mean); rel > 1e-9 {
				t.Errorf("mean = %v, want %v", got.Mean, want.Mean)
			}
			for _, q := range []struct {
				name      string
				got, want time.Duration
			}{{"p50", got.P50, want.P50}, {"p90", got.P90, want.P90}, {"p99", got.P99, want.P99}} {
				if rel := math.Abs(float64(q.got-q.want)) / float64(max(q.want, 1)); rel > 0.01 || (q.want < 2*subBuckets && q.got != q.want) {
					t.Errorf("%s = %v, exact %v: off by %.3f%%", q.name, q.got, q.want, 100*rel)
				}
			}
		})
	}
}

func TestHistogramEmpty(t *testing.T) {
	h := new(histogram)
	h.merge(new(histogram))
	if s := h.summary(); s.Count != 0 || s.P50 != 0 || s.Max != 0 {
		t.Errorf("empty histogram summary = %+v", s)
	}
}
