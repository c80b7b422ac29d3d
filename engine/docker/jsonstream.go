package docker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// message is one object of the daemon's JSON message stream (the format
// of build, load and pull responses). Only the fields used here are decoded.
type message struct {
	Stream      string          `json:"stream"`
	Status      string          `json:"status"`
	ID          string          `json:"id"`
	Progress    json.RawMessage `json:"progressDetail"`
	Error       string          `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	Aux json.RawMessage `json:"aux"`
}

// errorMessage returns the message's error text, "" if it reports none.
func (m *message) errorMessage() string {
	if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
		return m.ErrorDetail.Message
	}
	return m.Error
}

// hasProgress reports whether a status message is a progress-bar update,
// which is noise for a line-oriented consumer.
func (m *message) hasProgress() bool {
	p := strings.TrimSpace(string(m.Progress))
	return p != "" && p != "{}" && p != "null"
}

// maxLineBytes bounds one buffered line of stream output so a daemon (or
// anything answering at its address) cannot make us buffer without limit.
const maxLineBytes = 1 << 20

// streamDecoder reads a JSON message stream and splits the "stream" text,
// which arrives in arbitrary chunks, into lines.
type streamDecoder struct {
	dec     *json.Decoder
	partial strings.Builder
}

func newStreamDecoder(r io.Reader) *streamDecoder {
	return &streamDecoder{dec: json.NewDecoder(r)}
}

// next decodes the next message. It returns io.EOF at the clean end of the
// stream.
func (d *streamDecoder) next() (*message, error) {
	var m message
	if err := d.dec.Decode(&m); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("decoding the engine's message stream: %w", err)
	}
	return &m, nil
}

// lines appends text to the pending partial line and returns the lines it
// completes, without their line endings.
func (d *streamDecoder) lines(text string) []string {
	var out []string
	for {
		i := strings.IndexByte(text, '\n')
		if i < 0 {
			if d.partial.Len()+len(text) > maxLineBytes {
				// Flush an overlong line in pieces rather than grow forever.
				d.partial.WriteString(text)
				out = append(out, strings.TrimSuffix(d.partial.String(), "\r"))
				d.partial.Reset()
				return out
			}
			d.partial.WriteString(text)
			return out
		}
		d.partial.WriteString(text[:i])
		out = append(out, strings.TrimSuffix(d.partial.String(), "\r"))
		d.partial.Reset()
		text = text[i+1:]
	}
}

// flush returns the pending partial line, if any.
func (d *streamDecoder) flush() (string, bool) {
	if d.partial.Len() == 0 {
		return "", false
	}
	s := strings.TrimSuffix(d.partial.String(), "\r")
	d.partial.Reset()
	return s, true
}
