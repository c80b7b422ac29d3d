package main

import (
	"fmt"
	"io"

	"github.com/ociapp/ociapp/internal/termstatus"
	"github.com/ociapp/ociapp/loadgen"
)

// statusLine is bench's progress, drawn on the terminal's status line; it
// draws nothing when standard error is not a terminal.
type statusLine struct {
	line *termstatus.Line
}

func newStatusLine(w io.Writer) *statusLine {
	return &statusLine{line: termstatus.New(w, termstatus.IsTerminal(w))}
}

func (s *statusLine) show(text string) { s.line.Show(text) }

// progress shows how far a phase of requests has come.
func (s *statusLine) progress(phase string, p loadgen.Progress, total, containers int) {
	if !s.line.Live() {
		return
	}
	s.show(progressText(phase, p, total, containers))
}

func progressText(phase string, p loadgen.Progress, total, containers int) string {
	done := fmt.Sprint(p.Done)
	if total > 0 {
		done = fmt.Sprintf("%d/%d", p.Done, total)
	}
	return fmt.Sprintf("%s: %s requests, %.0f req/s, %d errors, %d containers, %.1fs",
		phase, done, p.Rate, p.Failed, containers, p.Elapsed.Seconds())
}

func (s *statusLine) clear() { s.line.Clear() }
