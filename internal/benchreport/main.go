// Command benchreport records the benchmark machine and renders docs/benchmarks.md and its plot from the results scripts/benchmarks.sh collects.
//
//	benchreport facts > RESULTS/machine.json
//	benchreport render -results RESULTS -md docs/benchmarks.md -svg docs/img/latency-vs-concurrency.svg
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  benchreport facts                  print the machine's facts as JSON
  benchreport render -results DIR -md FILE -svg FILE
                                     write the report and the plot
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "facts":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(gatherMachine(ctx, time.Now())); err != nil {
			fmt.Fprintln(stderr, "benchreport:", err)
			return 1
		}
		return 0
	case "render":
		fs := flag.NewFlagSet("render", flag.ContinueOnError)
		fs.SetOutput(stderr)
		dir := fs.String("results", "", "the results directory")
		md := fs.String("md", "docs/benchmarks.md", "the report to write")
		svg := fs.String("svg", "docs/img/latency-vs-concurrency.svg", "the plot to write")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if *dir == "" || fs.NArg() > 0 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		if err := render(*dir, *md, *svg); err != nil {
			fmt.Fprintln(stderr, "benchreport:", err)
			return 1
		}
		return 0
	}
	fmt.Fprint(stderr, usage)
	return 2
}

// render writes the report and the plot; the report links to the plot by
// its path relative to the report.
func render(dir, mdPath, svgPath string) error {
	res, err := loadResults(dir)
	if err != nil {
		return fmt.Errorf("reading results: %w", err)
	}
	link, err := filepath.Rel(filepath.Dir(mdPath), svgPath)
	if err != nil {
		return err
	}
	rep := buildReport(res, filepath.ToSlash(link))
	var md, svg bytes.Buffer
	if err := renderMarkdown(&md, rep); err != nil {
		return fmt.Errorf("rendering %s: %w", mdPath, err)
	}
	if err := renderPlot(&svg, res, rep.floorP50); err != nil {
		return fmt.Errorf("rendering %s: %w", svgPath, err)
	}
	for _, out := range []struct {
		path string
		data []byte
	}{{mdPath, md.Bytes()}, {svgPath, svg.Bytes()}} {
		if err := os.MkdirAll(filepath.Dir(out.path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(out.path, out.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
