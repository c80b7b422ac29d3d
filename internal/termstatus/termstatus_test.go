package termstatus

import (
	"bytes"
	"os"
	"testing"
)

func TestLine(t *testing.T) {
	tests := []struct {
		name  string
		width int
		draw  func(*Line)
		want  string
	}{
		{"redrawn in place", 80, func(l *Line) {
			l.Show("loading the image")
			l.Show("short")
			l.Clear()
		}, "\r\x1b[Kloading the image\r\x1b[Kshort\r\x1b[K"},
		{"cleared once", 80, func(l *Line) {
			l.Clear()
			l.Show("a")
			l.Clear()
			l.Clear()
		}, "\r\x1b[Ka\r\x1b[K"},
		{"cut to the terminal", 12, func(l *Line) { l.Show("a line longer than the terminal") },
			"\r\x1b[Ka line lon…"},
		{"cut by characters, not bytes", 6, func(l *Line) { l.Show("µµµµµµµµ") },
			"\r\x1b[Kµµµµ…"},
		{"fits exactly", 6, func(l *Line) { l.Show("12345") }, "\r\x1b[K12345"},
		{"control characters", 80, func(l *Line) { l.Show("a\tb\rc\x1b[1md\x7f") },
			"\r\x1b[Ka b c [1md "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := &Line{w: &buf, width: tt.width}
			tt.draw(l)
			if buf.String() != tt.want {
				t.Errorf("drew %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

func TestNotLive(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, false)
	l.Show("starting")
	l.Clear()
	if buf.Len() != 0 || l.Live() {
		t.Errorf("a line that is not live drew %q", buf.String())
	}
	if l := New(&buf, true); !l.Live() || l.width != defaultWidth {
		t.Errorf("live line on a buffer: live %v, width %d", l.Live(), l.width)
	}
}

func TestIsTerminal(t *testing.T) {
	if IsTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("a regular file is a terminal")
	}
}
