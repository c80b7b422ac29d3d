package loadgen

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// Summary describes a set of latencies. Percentiles use the nearest-rank
// definition: the p-th percentile of n sorted values is the value at rank
// ceil(p/100 * n).
type Summary struct {
	Count                         int64
	Min, Mean, P50, P90, P99, Max time.Duration
	// Exact reports whether every latency was kept, so the percentiles are
	// exact. Otherwise they come from a log-linear histogram and are within
	// RelError of the true value; Min, Max and Mean are always exact.
	Exact    bool
	RelError float64
}

// rank is the 1-based nearest rank of quantile q (0 < q <= 1) among n values.
func rank(q float64, n int64) int64 {
	r := int64(math.Ceil(q * float64(n)))
	return min(max(r, 1), n)
}

// Summarize summarizes latencies exactly; it sorts lat in place.
func Summarize(lat []time.Duration) Summary {
	s := Summary{Count: int64(len(lat)), Exact: true}
	if len(lat) == 0 {
		return s
	}
	slices.Sort(lat)
	var sum float64
	for _, d := range lat {
		sum += float64(d)
	}
	at := func(q float64) time.Duration { return lat[rank(q, s.Count)-1] }
	s.Min, s.Max = lat[0], lat[len(lat)-1]
	s.Mean = time.Duration(sum / float64(len(lat)))
	s.P50, s.P90, s.P99 = at(0.50), at(0.90), at(0.99)
	return s
}

// The histogram is log-linear, like HDR histograms: values below
// 2*subBuckets nanoseconds get a bucket each; above that, every power of
// two is split into subBuckets equal buckets. A bucket [lo, lo+w) has
// w/lo <= 1/subBuckets, so its midpoint is within 1/(2*subBuckets) of any
// value in it. Values from maxTracked on share the last bucket (their
// percentiles are clamped to the exact maximum).
const (
	subBucketBits = 7
	subBuckets    = 1 << subBucketBits // 128: midpoints within 0.4%
	maxTrackedLog = 40                 // 2^40 ns, about 18 minutes
	numBuckets    = 2*subBuckets + (maxTrackedLog-subBucketBits-1)*subBuckets
)

// histRelError is the largest relative error of a histogram percentile.
const histRelError = 1.0 / (2 * subBuckets)

// histogram counts latencies in nanoseconds with bounded memory.
type histogram struct {
	counts   [numBuckets]int64
	n        int64
	sum      float64
	min, max int64
}

func bucketOf(v int64) int {
	if v < 2*subBuckets {
		return int(max(v, 0))
	}
	if v >= 1<<maxTrackedLog {
		return numBuckets - 1
	}
	shift := bits.Len64(uint64(v)) - subBucketBits - 1 // v>>shift is in [subBuckets, 2*subBuckets)
	return 2*subBuckets + (shift-1)*subBuckets + int(v>>shift) - subBuckets
}

// bucketMid is the midpoint of bucket i (its value, for exact buckets).
func bucketMid(i int) int64 {
	if i < 2*subBuckets {
		return int64(i)
	}
	shift := (i-2*subBuckets)/subBuckets + 1
	lo := int64(subBuckets+(i-2*subBuckets)%subBuckets) << shift
	return lo + (int64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	v := int64(d)
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
	h.counts[bucketOf(v)]++
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

func (h *histogram) summary() Summary {
	s := Summary{Count: h.n, RelError: histRelError}
	if h.n == 0 {
		return s
	}
	at := func(q float64) time.Duration {
		r := rank(q, h.n)
		var seen int64
		for i, c := range h.counts {
			seen += c
			if seen >= r {
				return time.Duration(min(max(bucketMid(i), h.min), h.max))
			}
		}
		return time.Duration(h.max)
	}
	s.Min, s.Max = time.Duration(h.min), time.Duration(h.max)
	s.Mean = time.Duration(h.sum / float64(h.n))
	s.P50, s.P90, s.P99 = at(0.50), at(0.90), at(0.99)
	return s
}
