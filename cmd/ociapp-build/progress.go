package main

import (
	"fmt"
	"io"
	"regexp"

	"github.com/ociapp/ociapp/build"
	"github.com/ociapp/ociapp/internal/termstatus"
)

// display draws build progress: on a terminal, phases as lines and a status
// line that shows the current step and its latest output, redrawn in place;
// otherwise every event as a plain line.
type display struct {
	w      io.Writer
	status *termstatus.Line
	step   string
}

func newDisplay(w io.Writer, tty bool) *display {
	return &display{w: w, status: termstatus.New(w, tty)}
}

// ansiEscape matches terminal escape sequences; the engine colours some
// output, which must not garble the display or a log file.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func stripANSI(s string) string { return ansiEscape.ReplaceAllString(s, "") }

func (d *display) event(ev build.Event) {
	ev.Text = stripANSI(ev.Text)
	if !d.status.Live() {
		switch ev.Kind {
		case build.EventPhase:
			fmt.Fprintf(d.w, "==> %s\n", ev.Text)
		case build.EventStep:
			fmt.Fprintf(d.w, "  %s\n", ev.Text)
		case build.EventOutput:
			fmt.Fprintf(d.w, "    %s\n", ev.Text)
		}
		return
	}
	switch ev.Kind {
	case build.EventPhase:
		d.status.Clear()
		d.step = ""
		fmt.Fprintf(d.w, "==> %s\n", ev.Text)
	case build.EventStep:
		d.step = ev.Text
		d.status.Show("  " + ev.Text)
	case build.EventOutput:
		if d.step == "" {
			d.status.Show("  " + ev.Text)
		} else {
			d.status.Show("  " + d.step + " | " + ev.Text)
		}
	}
}

// finish removes the status line.
func (d *display) finish() { d.status.Clear() }
