package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ociapp/ociapp/internal/bytesize"
	"github.com/ociapp/ociapp/loadgen"
)

// benchReport is what bench prints; with --json, exactly this shape.
type benchReport struct {
	Artifact   artifactReport  `json:"artifact"`
	Settings   benchSettings   `json:"settings"`
	Run        *runReport      `json:"run,omitempty"`
	ColdStart  *coldReport     `json:"cold_start,omitempty"`
	Containers containerReport `json:"containers"`
	// Interrupted: the run was stopped (Ctrl-C); the figures cover what ran.
	Interrupted bool `json:"interrupted,omitempty"`
}

type artifactReport struct {
	Path         string `json:"path"`
	Name         string `json:"name"`
	Version      string `json:"version"`
	Digest       string `json:"digest"`
	ConfigDigest string `json:"config_digest"`
	SizeBytes    int64  `json:"size_bytes"`
	// VerifyMS is reading the file and checking every blob's digest, and
	// finding the user the image runs as (runtime.PrepareReport).
	VerifyMS float64 `json:"verify_ms"`
	// CheckMS is asking the engine whether it has the image.
	CheckMS float64 `json:"check_ms"`
	// ImagePresent says the engine already had the image; otherwise LoadMS
	// is the time it took to load it, its layers checked on the way.
	ImagePresent bool    `json:"image_present"`
	LoadMS       float64 `json:"load_ms,omitempty"`
}

type benchSettings struct {
	Concurrency          int     `json:"concurrency"`
	Requests             int     `json:"requests,omitempty"`
	DurationS            float64 `json:"duration_s,omitempty"`
	Warmup               int     `json:"warmup"`
	Cold                 int     `json:"cold"`
	PayloadBytes         int     `json:"payload_bytes"`
	MaxContainers        int     `json:"max_containers,omitempty"`
	ContainerConcurrency int     `json:"container_concurrency,omitempty"`
}

type runReport struct {
	Succeeded     int64         `json:"succeeded"`
	Failed        int64         `json:"failed"`
	ElapsedS      float64       `json:"elapsed_s"`
	ThroughputRPS float64       `json:"throughput_rps"`
	LatencyUS     latencyReport `json:"latency_us"`
	// CPU is the CPU time used over the measured run, per request.
	CPU    *cpuReport    `json:"cpu,omitempty"`
	Errors []errorReport `json:"errors"`
}

type latencyReport struct {
	// Recording is "exact" (every latency kept) or "histogram" (within
	// MaxErrorPct percent).
	Recording   string  `json:"recording"`
	MaxErrorPct float64 `json:"max_error_pct"`
	Count       int64   `json:"count"`
	Min         float64 `json:"min"`
	Mean        float64 `json:"mean"`
	P50         float64 `json:"p50"`
	P90         float64 `json:"p90"`
	P99         float64 `json:"p99"`
	Max         float64 `json:"max"`
}

type errorReport struct {
	Type    string `json:"type"`
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

type coldReport struct {
	SamplesMS []float64     `json:"samples_ms"`
	MinMS     float64       `json:"min_ms"`
	P50MS     float64       `json:"p50_ms"`
	MaxMS     float64       `json:"max_ms"`
	Failed    int           `json:"failed"`
	Errors    []errorReport `json:"errors,omitempty"`
}

type containerReport struct {
	// Started counts containers the measured runtime started (warm-up
	// included; cold-start runtimes excluded).
	Started uint64 `json:"started"`
	// Peak is the most containers seen ready at once.
	Peak int `json:"peak"`
	// Max is the runtime's limit per artifact.
	Max int `json:"max"`
}

// cpuReport is the CPU time used over the measured run.
type cpuReport struct {
	// CallerUSPerRequest is this process's CPU time (user and system, all
	// threads: the runtime and the load generator) per request.
	CallerUSPerRequest float64 `json:"caller_us_per_request"`
	// ContainersUSPerRequest is the CPU time of the containers, from their
	// cgroups, per request; absent when they could not be read.
	ContainersUSPerRequest *float64 `json:"containers_us_per_request,omitempty"`
	CallerS                float64  `json:"caller_s"`
	ContainersS            float64  `json:"containers_s,omitempty"`
	// Containers is how many containers were measured.
	Containers            int    `json:"containers"`
	ContainersUnavailable string `json:"containers_unavailable,omitempty"`
}

func newRunReport(res loadgen.Result) *runReport {
	l := res.Latency
	recording := "histogram"
	if l.Exact {
		recording = "exact"
	}
	return &runReport{
		Succeeded:     res.Succeeded,
		Failed:        res.Failed,
		ElapsedS:      res.Elapsed.Seconds(),
		ThroughputRPS: res.Throughput(),
		LatencyUS: latencyReport{
			Recording:   recording,
			MaxErrorPct: 100 * l.RelError,
			Count:       l.Count,
			Min:         us(l.Min),
			Mean:        us(l.Mean),
			P50:         us(l.P50),
			P90:         us(l.P90),
			P99:         us(l.P99),
			Max:         us(l.Max),
		},
		Errors: errorReports(res.Errors),
	}
}

func errorReports(ecs []loadgen.ErrorCount) []errorReport {
	out := make([]errorReport, 0, len(ecs))
	for _, ec := range ecs {
		out = append(out, errorReport{Type: ec.Type, Count: ec.Count, Example: ec.Example})
	}
	return out
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// writeBenchText prints the report for people.
func writeBenchText(w io.Writer, rep *benchReport) {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	a := rep.Artifact
	name := strings.TrimSpace(a.Name + " " + a.Version)
	fmt.Fprintf(tw, "artifact\t%s (%s, %s)\n", name, shortDigest(a.Digest), bytesize.Format(a.SizeBytes))
	fmt.Fprintf(tw, "  verify\t%s\n", fmtMS(a.VerifyMS))
	if a.ImagePresent {
		fmt.Fprintf(tw, "  image\talready loaded (checked in %s)\n", fmtMS(a.CheckMS))
	} else {
		fmt.Fprintf(tw, "  image\tloaded in %s (checked in %s)\n", fmtMS(a.LoadMS), fmtMS(a.CheckMS))
	}
	s := rep.Settings
	if r := rep.Run; r != nil {
		what := fmt.Sprintf("%d requests", s.Requests)
		if s.DurationS > 0 {
			what = time.Duration(s.DurationS * float64(time.Second)).String()
		}
		warm := "no warm-up"
		if s.Warmup > 0 {
			warm = fmt.Sprintf("after %d warm-up requests", s.Warmup)
		}
		fmt.Fprintf(tw, "run\t%s at concurrency %d, %s, %d-byte payload\n", what, s.Concurrency, warm, s.PayloadBytes)
		fmt.Fprintf(tw, "  requests\t%d succeeded, %d failed in %.3f s\n", r.Succeeded, r.Failed, r.ElapsedS)
		fmt.Fprintf(tw, "  throughput\t%.0f req/s\n", r.ThroughputRPS)
		l := r.LatencyUS
		if l.Count > 0 {
			fmt.Fprintf(tw, "  latency\tp50 %s  p90 %s  p99 %s  max %s\n", fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.Max))
			how := "exact"
			if l.Recording != "exact" {
				how = fmt.Sprintf("histogram, within %.1f%%", l.MaxErrorPct)
			}
			fmt.Fprintf(tw, "  \tmin %s  mean %s  (%s, %d requests)\n", fmtUS(l.Min), fmtUS(l.Mean), how, l.Count)
		}
		if c := r.CPU; c != nil {
			containers := "containers: " + c.ContainersUnavailable
			if c.ContainersUSPerRequest != nil {
				containers = fmt.Sprintf("%s in the containers (%d, from their cgroups)", fmtUS(*c.ContainersUSPerRequest), c.Containers)
			}
			fmt.Fprintf(tw, "  cpu\tper request: %s in this process, %s\n", fmtUS(c.CallerUSPerRequest), containers)
		}
		if len(r.Errors) == 0 {
			fmt.Fprintf(tw, "  errors\tnone\n")
		}
		for i, e := range r.Errors {
			label := ""
			if i == 0 {
				label = "errors"
			}
			fmt.Fprintf(tw, "  %s\t%d %s: %s\n", label, e.Count, e.Type, firstLine(e.Example))
		}
	}
	if rep.Run != nil || rep.Containers.Started > 0 {
		fmt.Fprintf(tw, "containers\t%d started, at most %d ready at once (limit %d)\n", rep.Containers.Started, rep.Containers.Peak, rep.Containers.Max)
	}
	if c := rep.ColdStart; c != nil {
		if n := len(c.SamplesMS); n > 0 {
			fmt.Fprintf(tw, "cold start\tmin %s  p50 %s  max %s  (%d runs)\n", fmtMS(c.MinMS), fmtMS(c.P50MS), fmtMS(c.MaxMS), n)
		} else {
			fmt.Fprintf(tw, "cold start\tno run succeeded\n")
		}
		for _, e := range c.Errors {
			fmt.Fprintf(tw, "  failed\t%d %s: %s\n", e.Count, e.Type, firstLine(e.Example))
		}
	}
	if rep.Interrupted {
		fmt.Fprintf(tw, "interrupted\tthe figures cover the part that ran\n")
	}
	tw.Flush()
	_, _ = w.Write(buf.Bytes())
}

func shortDigest(d string) string {
	if hex, ok := strings.CutPrefix(d, "sha256:"); ok && len(hex) > 12 {
		return "sha256:" + hex[:12]
	}
	return d
}

// fmtUS formats microseconds in the unit that suits them.
func fmtUS(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2f ms", v/1e3)
	}
	return fmt.Sprintf("%.1f µs", v)
}

func fmtMS(v float64) string { return fmtUS(v * 1e3) }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
