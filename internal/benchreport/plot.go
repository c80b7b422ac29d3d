package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// The plot: latency (p50 solid, p99 dashed, log scale) and throughput
// against concurrency (log2 scale), one line per app, side by side.
const (
	plotW, plotH   = 960, 420
	panelW, panelH = 370, 280
	panelTop       = 60
	leftPanelX     = 90
	rightPanelX    = 560
)

var appColors = map[string]string{"go": "#1f77b4", "python": "#d95f02"}

type svgWriter struct {
	b strings.Builder
}

func (s *svgWriter) f(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

func (s *svgWriter) text(x, y float64, anchor, class, text string) {
	s.f(`<text x="%.1f" y="%.1f" text-anchor="%s" class="%s">%s</text>`+"\n", x, y, anchor, class, html.EscapeString(text))
}

// axis maps values to pixels along one dimension.
type axis struct {
	lo, hi   float64 // in the scale's units (log10 for log axes)
	log      bool
	from, to float64 // pixels
}

func (a axis) at(v float64) float64 {
	if a.log {
		v = math.Log10(v)
	}
	return a.from + (v-a.lo)/(a.hi-a.lo)*(a.to-a.from)
}

// renderPlot writes the SVG for the warm runs of every app.
func renderPlot(w io.Writer, res *results, floorP50 float64) error {
	var concs []int
	seen := map[int]bool{}
	minLat, maxLat, maxRPS := math.Inf(1), 0.0, 0.0
	for _, a := range apps {
		for _, p := range res.Warm[a.Key] {
			if !seen[p.Concurrency] {
				seen[p.Concurrency] = true
				concs = append(concs, p.Concurrency)
			}
			minLat = min(minLat, p.P50)
			maxLat = max(maxLat, p.P99)
			maxRPS = max(maxRPS, p.RPS)
		}
	}
	if len(concs) == 0 {
		return fmt.Errorf("no warm runs to plot")
	}
	if floorP50 > 0 {
		minLat = min(minLat, floorP50)
	}
	minC, maxC := slices.Min(concs), slices.Max(concs)
	xAxis := func(left float64) axis {
		lo, hi := math.Log10(float64(minC)), math.Log10(float64(maxC))
		if hi == lo {
			hi = lo + 1
		}
		return axis{lo: lo, hi: hi, log: true, from: left + 10, to: left + panelW - 10}
	}
	latY := axis{lo: math.Floor(math.Log10(minLat)), hi: math.Ceil(math.Log10(maxLat)), log: true, from: panelTop + panelH, to: panelTop}
	if latY.hi == latY.lo {
		latY.hi++
	}
	rpsStep := niceStep(maxRPS / 5)
	rpsTop := math.Ceil(maxRPS*1.05/rpsStep) * rpsStep
	rpsY := axis{lo: 0, hi: rpsTop, from: panelTop + panelH, to: panelTop}

	s := &svgWriter{}
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	s.f(`<style>.t{font-size:15px;font-weight:bold}.h{font-size:13px;font-weight:bold}.l{fill:#333}.g{stroke:#e3e3e3}.a{stroke:#666}</style>` + "\n")
	s.f(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	s.text(plotW/2, 24, "middle", "t", "Warm Execute against concurrency ("+res.Machine.CPU+", "+fmt.Sprint(res.Machine.CPUs)+" CPUs, "+res.Machine.Date+")")

	// Latency panel.
	lx := xAxis(leftPanelX)
	s.text(leftPanelX+panelW/2, panelTop-10, "middle", "h", "Latency per request (log scale): p50 solid, p99 dashed")
	for e := latY.lo; e <= latY.hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if math.Log10(v) > latY.hi+1e-9 {
				break
			}
			y := latY.at(v)
			s.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="g"/>`+"\n", leftPanelX, y, leftPanelX+panelW, y)
			s.text(leftPanelX-6, y+4, "end", "l", tickUS(v))
		}
	}
	if floorP50 > 0 {
		y := latY.at(floorP50)
		s.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#888" stroke-dasharray="2,3"/>`+"\n", leftPanelX, y, leftPanelX+panelW, y)
		s.text(leftPanelX+panelW-4, y-4, "end", "l", "socket floor p50 "+fmtUS(floorP50))
	}
	frame(s, leftPanelX, lx, concs)

	// Throughput panel.
	rx := xAxis(rightPanelX)
	s.text(rightPanelX+panelW/2, panelTop-10, "middle", "h", "Throughput (requests per second)")
	for v := 0.0; v <= rpsTop+1e-9; v += rpsStep {
		y := rpsY.at(v)
		s.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="g"/>`+"\n", rightPanelX, y, rightPanelX+panelW, y)
		s.text(rightPanelX-6, y+4, "end", "l", shortCount(v))
	}
	frame(s, rightPanelX, rx, concs)

	for _, a := range apps {
		pts := res.Warm[a.Key]
		if len(pts) == 0 {
			continue
		}
		color := appColors[a.Key]
		line := func(x, y axis, val func(warmPoint) float64, dash string) {
			var coords []string
			for _, p := range pts {
				coords = append(coords, fmt.Sprintf("%.1f,%.1f", x.at(float64(p.Concurrency)), y.at(val(p))))
			}
			s.f(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(coords, " "), color, dash)
			for _, c := range coords {
				xy := strings.Split(c, ",")
				s.f(`<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], color)
			}
		}
		line(lx, latY, func(p warmPoint) float64 { return p.P50 }, "")
		line(lx, latY, func(p warmPoint) float64 { return p.P99 }, ` stroke-dasharray="6,4"`)
		line(rx, rpsY, func(p warmPoint) float64 { return p.RPS }, "")
	}

	// Legend.
	x := float64(plotW/2 - 120)
	for _, a := range apps {
		if len(res.Warm[a.Key]) == 0 {
			continue
		}
		y := float64(plotH - 18)
		s.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", x, y-4, x+24, y-4, appColors[a.Key])
		s.text(x+30, y, "start", "l", a.Name)
		x += 140
	}
	s.f("</svg>\n")
	_, err := io.WriteString(w, s.b.String())
	return err
}

// frame draws a panel's axes and the concurrency ticks.
func frame(s *svgWriter, left int, x axis, concs []int) {
	bottom := panelTop + panelH
	s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" class="a"/>`+"\n", left, bottom, left+panelW, bottom)
	s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" class="a"/>`+"\n", left, panelTop, left, bottom)
	for _, c := range concs {
		px := x.at(float64(c))
		s.f(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="a"/>`+"\n", px, bottom, px, bottom+4)
		s.text(px, float64(bottom+18), "middle", "l", fmt.Sprint(c))
	}
	s.text(float64(left+panelW/2), float64(bottom+36), "middle", "l", "concurrency (requests in flight)")
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// tickUS labels a latency tick: 5000 as "5 ms".
func tickUS(v float64) string { return scaled(v, " s", " ms", " µs") }

// shortCount prints 150000 as "150k".
func shortCount(v float64) string { return scaled(v, "M", "k", "") }

// scaled prints v in millions, thousands or ones, each followed by its
// unit.
func scaled(v float64, millions, thousands, ones string) string {
	switch {
	case v >= 1e6:
		return trimFloat(v/1e6) + millions
	case v >= 1e3:
		return trimFloat(v/1e3) + thousands
	}
	return trimFloat(v) + ones
}
