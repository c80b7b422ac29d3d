// Package bytesize reads and writes byte counts for people.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Format writes n in the largest binary unit it reaches, to one decimal:
// "512 B", "1.5 KiB", "20.0 MiB", "2.1 GiB".
func Format(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Parse reads a byte count with an optional binary suffix, as flags take
// them: 512m, 2g, 1.5G, 64MiB, 512MB, 1048576.
func Parse(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		case 't':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || !(n >= 0) || n*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q; use bytes or a number with k, m, g or t (e.g. 512m)", s)
	}
	return int64(n * float64(mult)), nil
}

// Short writes n as Parse reads it, in the largest unit that divides it:
// 1<<30 as "1g", 64<<10 as "64k", 1000 as "1000".
func Short(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
