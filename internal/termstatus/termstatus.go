// Package termstatus draws one status line on a terminal, redrawn in place.
package termstatus

import (
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"
)

// defaultWidth is the width assumed when the terminal's is unknown.
const defaultWidth = 80

// Line is a status line on a terminal. A Line that is not live draws
// nothing, so callers need not check where their output goes.
type Line struct {
	w     io.Writer // nil: not live
	width int       // columns; a line that wraps cannot be redrawn
	shown bool      // something is drawn
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// New returns a status line on w that draws only when live (usually
// IsTerminal(w)). Its width is the terminal's when w is one.
func New(w io.Writer, live bool) *Line {
	if !live {
		return &Line{}
	}
	l := &Line{w: w, width: defaultWidth}
	if f, ok := w.(*os.File); ok {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil && width > 1 {
			l.width = width
		}
	}
	return l
}

// Live reports whether the line draws.
func (l *Line) Live() bool { return l.w != nil }

// Show replaces the line with text: control characters become spaces, and
// text longer than the terminal is cut, ending in "…".
func (l *Line) Show(text string) {
	if l.w == nil {
		return
	}
	text = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, text)
	// The last column stays free: some terminals wrap on writing to it.
	if limit := l.width - 1; utf8.RuneCountInString(text) > limit {
		text = string([]rune(text)[:limit-1]) + "…"
	}
	_, _ = io.WriteString(l.w, "\r\x1b[K"+text)
	l.shown = true
}

// Clear removes the line, leaving the cursor at its start, where the next
// output goes.
func (l *Line) Clear() {
	if l.w == nil || !l.shown {
		return
	}
	_, _ = io.WriteString(l.w, "\r\x1b[K")
	l.shown = false
}
