package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/ociapp/ociapp/build"
)

// display draws build progress: on a terminal, phases as lines and a status
// line that shows the current step and its latest output, redrawn in place;
// otherwise every event as a plain line.
type display struct {
	w      io.Writer
	live   bool
	width  int
	step   string
	status bool // a status line is on screen
}

func newDisplay(w io.Writer, tty bool) *display {
	d := &display{w: w, live: tty, width: 80}
	if f, ok := w.(*os.File); ok && tty {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil && width > 20 {
			d.width = width
		}
	}
	return d
}

// ansiEscape matches terminal escape sequences; the engine colours some
// output, which must not garble the display or a log file.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func stripANSI(s string) string { return ansiEscape.ReplaceAllString(s, "") }

func (d *display) event(ev build.Event) {
	ev.Text = stripANSI(ev.Text)
	if !d.live {
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
		d.clear()
		d.step = ""
		fmt.Fprintf(d.w, "==> %s\n", ev.Text)
	case build.EventStep:
		d.step = ev.Text
		d.draw(ev.Text)
	case build.EventOutput:
		if d.step == "" {
			d.draw(ev.Text)
		} else {
			d.draw(d.step + " | " + ev.Text)
		}
	}
}

// draw replaces the status line with text cut to the terminal width.
func (d *display) draw(text string) {
	text = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, text)
	if max := d.width - 3; utf8.RuneCountInString(text) > max {
		text = string([]rune(text)[:max-1]) + "…"
	}
	fmt.Fprintf(d.w, "\r\x1b[K  %s", text)
	d.status = true
}

func (d *display) clear() {
	if d.status {
		fmt.Fprint(d.w, "\r\x1b[K")
		d.status = false
	}
}

// finish removes the status line.
func (d *display) finish() {
	if d.live {
		d.clear()
	}
}
