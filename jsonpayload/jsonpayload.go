// Package jsonpayload converts between JSON text and msgpack payloads,
// byte to byte, for every place a payload meets JSON: ociapp-runtime run
// and bench --payload, and the daemon's JSON API.
package jsonpayload

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ociapp/ociapp/internal/mpwire"
)

// The conversion goes from bytes to bytes without building the value in
// between: a value tree of interfaces costs some twenty times the bytes of
// its JSON, and a daemon holding a few large requests would hold
// gigabytes.

// MaxNesting is how deeply a payload may nest objects and arrays below its
// top-level map: the most the application protocol's reader accepts
// (protocol's skip limit), so a request within it is never refused later.
const MaxNesting = 128

// ErrTooLarge is a JSON request whose msgpack form exceeds the limit given
// to FromJSON.
var ErrTooLarge = errors.New("the request as msgpack exceeds the request size limit")

// FromJSON turns a JSON object into a msgpack payload of at most limit
// bytes (no limit when limit <= 0). Integers stay integers (int64, or
// uint64 above its range) and other numbers become floats, because msgpack
// tells them apart and applications validate the difference. Objects keep
// their keys' order. Anything but one JSON object, with nothing after it
// but white space, is an error that says what is wrong.
func FromJSON(body []byte, limit int) ([]byte, error) {
	if limit <= 0 {
		limit = math.MaxInt
	}
	if !json.Valid(body) {
		return nil, invalidJSON(body)
	}
	t := jsonScanner{b: body}
	t.space()
	if c := body[t.off]; c != '{' {
		return nil, fmt.Errorf("the request must be a JSON object, not %s", kindOf(c))
	}
	// The first pass counts the elements of each object and array, in the
	// order they open, for the headers the second pass writes first, and
	// the size of the result, which is allocated once.
	counts, size, err := t.count(limit)
	if err != nil {
		return nil, err
	}
	t = jsonScanner{b: body, counts: counts, out: make([]byte, 0, size)}
	if err := t.value(); err != nil {
		return nil, err
	}
	return t.out, nil
}

// invalidJSON says what is wrong with body, which json.Valid refused.
func invalidJSON(body []byte) error {
	// The standard decoder gives up on nesting deeper than 10,000; that
	// is the nesting limit's to report.
	if nestingOf(body) > MaxNesting+1 {
		return nestingError()
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(new(json.RawMessage)); err != nil {
		if err == io.EOF {
			return errors.New("the request is empty; it must be a JSON object")
		}
		return fmt.Errorf("the request is not valid JSON: %v", err)
	}
	return errors.New("the request has data after its JSON value")
}

// kindOf names the JSON value that starts with c.
func kindOf(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// jsonScanner walks JSON that json.Valid accepted.
type jsonScanner struct {
	b      []byte
	off    int
	counts []uint32
	next   int // index in counts of the next container
	out    []byte
}

func (t *jsonScanner) space() {
	for t.off < len(t.b) {
		switch t.b[t.off] {
		case ' ', '\t', '\r', '\n':
			t.off++
		default:
			return
		}
	}
}

// nestingOf returns how deeply b, valid JSON or not, nests objects and
// arrays, counting the brackets outside strings.
func nestingOf(b []byte) int {
	depth, most := 0, 0
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			most = max(most, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return most
}

func nestingError() error {
	return fmt.Errorf("the request nests objects and arrays more than %d levels deep, the most a payload may; flatten it", MaxNesting)
}

// count runs through the whole value, counting each container's elements
// and the bytes of the msgpack it becomes (at most limit).
func (t *jsonScanner) count(limit int) (counts []uint32, size int, err error) {
	// Sized once: every container opens with one of these bytes (strings
	// may hold more), and takes at least two bytes.
	counts = make([]uint32, 0, min(bytes.Count(t.b, []byte{'{'})+bytes.Count(t.b, []byte{'['}), len(t.b)/2))
	var open []int // indexes in counts of the containers around off
	var scratch [9]byte
	for t.off < len(t.b) {
		if size > limit {
			return nil, 0, ErrTooLarge
		}
		t.space()
		if t.off >= len(t.b) {
			break
		}
		c := t.b[t.off]
		// An element of an array, or a key of an object: the container
		// gets one more.
		elem := len(open) > 0 && c != '}' && c != ']' && c != ',' && c != ':' && t.prevStructural() != ':'
		if elem {
			counts[open[len(open)-1]]++
		}
		switch c {
		case '{', '[':
			if len(open) > MaxNesting {
				return nil, 0, nestingError()
			}
			open = append(open, len(counts))
			counts = append(counts, 0)
			t.off++
			t.space()
			// A non-empty container has an element one level deeper.
			if t.off < len(t.b) && t.b[t.off] != '}' && t.b[t.off] != ']' && len(open) > MaxNesting {
				return nil, 0, nestingError()
			}
		case '}', ']':
			size += mpwire.ContainerHeaderSize(int(counts[open[len(open)-1]]))
			open = open[:len(open)-1]
			t.off++
		case ',', ':':
			t.off++
		case '"':
			end := t.stringEnd()
			s, err := strValue(t.b[t.off:end])
			if err != nil {
				return nil, 0, err
			}
			size += mpwire.StrHeaderSize(len(s)) + len(s)
			t.off = end
		default:
			end := t.literalEnd()
			size += len(appendLiteral(scratch[:0], t.b[t.off:end]))
			t.off = end
		}
	}
	if size > limit {
		return nil, 0, ErrTooLarge
	}
	return counts, size, nil
}

// prevStructural returns the last byte before off that is not space.
func (t *jsonScanner) prevStructural() byte {
	for i := t.off - 1; i >= 0; i-- {
		switch c := t.b[i]; c {
		case ' ', '\t', '\r', '\n':
		default:
			return c
		}
	}
	return 0
}

// stringEnd returns the offset after the string starting at off.
func (t *jsonScanner) stringEnd() int {
	for i := t.off + 1; i < len(t.b); i++ {
		switch t.b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(t.b)
}

// literalEnd returns the offset after the number, true, false or null at off.
func (t *jsonScanner) literalEnd() int {
	i := t.off
	for i < len(t.b) {
		switch t.b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}

// value writes the value at off as msgpack.
func (t *jsonScanner) value() error {
	t.space()
	switch c := t.b[t.off]; c {
	case '{', '[':
		n := int(t.counts[t.next])
		t.next++
		t.off++
		if c == '{' {
			t.out = mpwire.AppendMapHeader(t.out, n)
		} else {
			t.out = mpwire.AppendArrayHeader(t.out, n)
		}
		for i := range n {
			if i > 0 {
				t.space()
				t.off++ // ','
			}
			if c == '{' {
				t.space()
				if err := t.str(); err != nil {
					return err
				}
				t.space()
				t.off++ // ':'
			}
			if err := t.value(); err != nil {
				return err
			}
		}
		t.space()
		t.off++ // '}' or ']'
	case '"':
		if err := t.str(); err != nil {
			return err
		}
	default:
		end := t.literalEnd()
		t.out = appendLiteral(t.out, t.b[t.off:end])
		t.off = end
	}
	return nil
}

// str writes the string at off.
func (t *jsonScanner) str() error {
	end := t.stringEnd()
	v, err := strValue(t.b[t.off:end])
	if err != nil {
		return err
	}
	t.off = end
	t.out = mpwire.AppendStr(t.out, v)
	return nil
}

// strValue returns the text of a JSON string (with its quotes), aliasing
// raw when it has no escapes.
func strValue(raw []byte) ([]byte, error) {
	inner := raw[1 : len(raw)-1]
	if utf8.Valid(inner) && bytes.IndexByte(inner, '\\') < 0 {
		return inner, nil
	}
	// Escapes and invalid UTF-8 (which becomes U+FFFD) are rare: the
	// standard decoder handles them.
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("the request is not valid JSON: %v", err)
	}
	return []byte(s), nil
}

// appendLiteral writes a number, true, false or null.
func appendLiteral(dst, tok []byte) []byte {
	switch tok[0] {
	case 't':
		return append(dst, 0xc3)
	case 'f':
		return append(dst, 0xc2)
	case 'n':
		return append(dst, 0xc0)
	}
	return appendJSONNumber(dst, string(tok))
}

// appendJSONNumber writes an integer as the smallest msgpack integer that
// holds it, anything else as a float64 (beyond float64's range, an
// infinity).
func appendJSONNumber(dst []byte, s string) []byte {
	// Only numbers without a fraction or exponent can be integers; trying
	// the others would cost an error value each.
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return mpwire.AppendInt(dst, i)
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return mpwire.AppendUint64(dst, u)
		}
	}
	f, _ := strconv.ParseFloat(s, 64)
	return mpwire.AppendFloat64(dst, f)
}

// ToJSON returns a msgpack payload from an application as JSON
// (see Write).
func ToJSON(payload []byte) ([]byte, error) {
	var b bytes.Buffer
	if _, err := Write(&b, payload); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// jsonChunk is how much JSON Write gathers before writing it.
const jsonChunk = 32 << 10

// Write writes a msgpack payload from an application to w as
// JSON, a chunk at a time, and returns how many bytes it wrote. Map keys
// that are not strings become their text, binary values base64 strings,
// floats JSON cannot express (NaN, infinities) their text, and timestamps
// RFC 3339 strings. A payload it cannot convert may leave part of its JSON
// written: write to io.Discard first to learn the length and the error.
func Write(w io.Writer, payload []byte) (int64, error) {
	r := mpToJSON{b: payload, w: w, out: make([]byte, 0, 2*jsonChunk)}
	if len(payload) == 0 || !(payload[0]&0xf0 == 0x80 || payload[0] == 0xde || payload[0] == 0xdf) {
		return 0, errors.New("the response is not a msgpack map")
	}
	if err := r.value(0); err != nil {
		return r.n, err
	}
	if r.off != len(payload) {
		return r.n, errors.New("the response has data after its msgpack map")
	}
	return r.n, r.flush(0)
}

type mpToJSON struct {
	b   []byte
	off int
	out []byte // JSON not yet written
	w   io.Writer
	n   int64 // bytes written to w
}

// flush writes out once it holds at least atLeast bytes.
func (r *mpToJSON) flush(atLeast int) error {
	if len(r.out) < atLeast || len(r.out) == 0 {
		return nil
	}
	n, err := r.w.Write(r.out)
	r.n += int64(n)
	r.out = r.out[:0]
	if err != nil {
		return fmt.Errorf("writing the response: %w", err)
	}
	return nil
}

var errShortPayload = errors.New("the response's msgpack ends early")

func (r *mpToJSON) take(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, errShortPayload
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s, nil
}

func (r *mpToJSON) uint(size int) (uint64, error) {
	s, err := r.take(size)
	if err != nil {
		return 0, err
	}
	switch size {
	case 1:
		return uint64(s[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(s)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(s)), nil
	}
	return binary.BigEndian.Uint64(s), nil
}

// length reads a length that must fit in what is left of the payload.
func (r *mpToJSON) length(size, per int) (int, error) {
	n, err := r.uint(size)
	if err != nil {
		return 0, err
	}
	if n > uint64(len(r.b)-r.off)/uint64(per) {
		return 0, errShortPayload
	}
	return int(n), nil
}

// scalar is a decoded msgpack value that is not a container, string or bin.
type scalar struct {
	kind byte // 'i' int, 'u' uint, 'f' float, 'b' bool, 'n' nil, 't' time
	i    int64
	u    uint64
	f    float64
	bits int // of a float: 32 or 64
	t    time.Time
}

// containerLength reads the length of the map or array whose first byte c
// was just consumed: in c itself (fix forms), or in the 16- or 32-bit
// field after it. per is the items each entry holds, for length's check.
func (r *mpToJSON) containerLength(c, code16, code32 byte, per int) (int, error) {
	switch c {
	case code16:
		return r.length(2, per)
	case code32:
		return r.length(4, per)
	}
	return int(c & 0x0f), nil
}

// value writes one value. Keys use key; containers recurse.
func (r *mpToJSON) value(depth int) error {
	if err := r.flush(jsonChunk); err != nil {
		return err
	}
	if depth > MaxNesting {
		return fmt.Errorf("the response nests more than %d levels deep", MaxNesting)
	}
	if r.off >= len(r.b) {
		return errShortPayload
	}
	c := r.b[r.off]
	switch {
	case c&0xf0 == 0x80 || c == 0xde || c == 0xdf:
		r.off++
		n, err := r.containerLength(c, 0xde, 0xdf, 2)
		if err != nil {
			return err
		}
		r.out = append(r.out, '{')
		for i := range n {
			if i > 0 {
				r.out = append(r.out, ',')
			}
			if err := r.key(); err != nil {
				return err
			}
			r.out = append(r.out, ':')
			if err := r.value(depth + 1); err != nil {
				return err
			}
		}
		r.out = append(r.out, '}')
		return nil
	case c&0xf0 == 0x90 || c == 0xdc || c == 0xdd:
		r.off++
		n, err := r.containerLength(c, 0xdc, 0xdd, 1)
		if err != nil {
			return err
		}
		r.out = append(r.out, '[')
		for i := range n {
			if i > 0 {
				r.out = append(r.out, ',')
			}
			if err := r.value(depth + 1); err != nil {
				return err
			}
		}
		r.out = append(r.out, ']')
		return nil
	}
	if s, isStr, ok, err := r.bytesValue(); err != nil {
		return err
	} else if ok {
		if isStr {
			r.out = appendJSONString(r.out, s)
		} else {
			r.out = append(r.out, '"')
			r.out = base64.StdEncoding.AppendEncode(r.out, s)
			r.out = append(r.out, '"')
		}
		return nil
	}
	v, err := r.scalar()
	if err != nil {
		return err
	}
	switch v.kind {
	case 'i':
		r.out = strconv.AppendInt(r.out, v.i, 10)
	case 'u':
		r.out = strconv.AppendUint(r.out, v.u, 10)
	case 'f':
		r.out = appendJSONFloat(r.out, v.f, v.bits)
	case 'b':
		r.out = strconv.AppendBool(r.out, v.u == 1)
	case 'n':
		r.out = append(r.out, "null"...)
	case 't':
		r.out = appendJSONString(r.out, []byte(v.t.Format(time.RFC3339Nano)))
	}
	return nil
}

// key writes a map key: a string as it is, a number, boolean or nil as its
// text (as Go prints it), binary as Go prints a byte slice.
func (r *mpToJSON) key() error {
	if err := r.flush(jsonChunk); err != nil {
		return err
	}
	if r.off >= len(r.b) {
		return errShortPayload
	}
	if s, isStr, ok, err := r.bytesValue(); err != nil {
		return err
	} else if ok {
		if isStr {
			r.out = appendJSONString(r.out, s)
		} else {
			r.out = appendJSONString(r.out, []byte(fmt.Sprint(s)))
		}
		return nil
	}
	c := r.b[r.off]
	if c&0xf0 == 0x80 || c == 0xde || c == 0xdf || c&0xf0 == 0x90 || c == 0xdc || c == 0xdd {
		return errors.New("the response has a map key that is a map or an array")
	}
	v, err := r.scalar()
	if err != nil {
		return err
	}
	var text string
	switch v.kind {
	case 'i':
		text = strconv.FormatInt(v.i, 10)
	case 'u':
		text = strconv.FormatUint(v.u, 10)
	case 'f':
		text = fmt.Sprint(v.f)
	case 'b':
		text = strconv.FormatBool(v.u == 1)
	case 'n':
		text = "<nil>"
	case 't':
		text = v.t.Format(time.RFC3339Nano)
	}
	r.out = appendJSONString(r.out, []byte(text))
	return nil
}

// bytesValue reads a string or bin at off, if that is what is there.
func (r *mpToJSON) bytesValue() (s []byte, isStr, ok bool, err error) {
	c := r.b[r.off]
	var n int
	switch {
	case c&0xe0 == 0xa0:
		r.off++
		n, isStr = int(c&0x1f), true
	case c == 0xd9 || c == 0xc4:
		r.off++
		n, err = r.length(1, 1)
		isStr = c == 0xd9
	case c == 0xda || c == 0xc5:
		r.off++
		n, err = r.length(2, 1)
		isStr = c == 0xda
	case c == 0xdb || c == 0xc6:
		r.off++
		n, err = r.length(4, 1)
		isStr = c == 0xdb
	default:
		return nil, false, false, nil
	}
	if err != nil {
		return nil, false, false, err
	}
	s, err = r.take(n)
	return s, isStr, err == nil, err
}

func (r *mpToJSON) scalar() (scalar, error) {
	c := r.b[r.off]
	r.off++
	switch {
	case c <= 0x7f:
		return scalar{kind: 'i', i: int64(c)}, nil
	case c >= 0xe0:
		return scalar{kind: 'i', i: int64(int8(c))}, nil
	}
	switch c {
	case 0xc0:
		return scalar{kind: 'n'}, nil
	case 0xc2, 0xc3:
		return scalar{kind: 'b', u: uint64(c - 0xc2)}, nil
	case 0xcc, 0xcd, 0xce, 0xcf:
		u, err := r.uint(1 << (c - 0xcc))
		if u > math.MaxInt64 {
			return scalar{kind: 'u', u: u}, err
		}
		return scalar{kind: 'i', i: int64(u)}, err
	case 0xd0, 0xd1, 0xd2, 0xd3:
		size := 1 << (c - 0xd0)
		u, err := r.uint(size)
		var i int64
		switch size {
		case 1:
			i = int64(int8(u))
		case 2:
			i = int64(int16(u))
		case 4:
			i = int64(int32(u))
		default:
			i = int64(u)
		}
		return scalar{kind: 'i', i: i}, err
	case 0xca:
		u, err := r.uint(4)
		return scalar{kind: 'f', f: float64(math.Float32frombits(uint32(u))), bits: 32}, err
	case 0xcb:
		u, err := r.uint(8)
		return scalar{kind: 'f', f: math.Float64frombits(u), bits: 64}, err
	case 0xd6, 0xd7, 0xc7:
		// The timestamp extension (type -1) is the one extension the
		// payload decoder knows.
		n := 4
		switch c {
		case 0xd7:
			n = 8
		case 0xc7:
			l, err := r.uint(1)
			if err != nil {
				return scalar{}, err
			}
			n = int(l)
		}
		typ, err := r.take(1)
		if err != nil {
			return scalar{}, err
		}
		data, err := r.take(n)
		if err != nil {
			return scalar{}, err
		}
		if int8(typ[0]) != -1 {
			return scalar{}, fmt.Errorf("the response holds a msgpack extension of type %d, which JSON cannot express", int8(typ[0]))
		}
		var sec, nsec int64
		switch n {
		case 4:
			sec = int64(binary.BigEndian.Uint32(data))
		case 8:
			v := binary.BigEndian.Uint64(data)
			nsec, sec = int64(v>>34), int64(v&(1<<34-1))
		case 12:
			nsec, sec = int64(binary.BigEndian.Uint32(data)), int64(binary.BigEndian.Uint64(data[4:]))
		default:
			return scalar{}, fmt.Errorf("the response holds a timestamp of %d bytes", n)
		}
		return scalar{kind: 't', t: time.Unix(sec, nsec).UTC()}, nil
	}
	return scalar{}, fmt.Errorf("the response holds msgpack type byte 0x%02x, which JSON cannot express", c)
}

// appendJSONFloat writes a float so that it reads back as a float: as
// encoding/json writes it, plus ".0" on integral values (1.0, not 1), since
// msgpack tells floats from integers and applications validate the
// difference; NaN and the infinities, which JSON has no numbers for, as
// strings. A float32 is written with the digits that identify it as a
// float32 (0.1, not 0.10000000149011612).
func appendJSONFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.AppendQuote(dst, strconv.FormatFloat(f, 'g', -1, bits))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// e-09 to e-9, as encoding/json writes it.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	} else if bytes.IndexByte(dst[start:], '.') < 0 {
		dst = append(dst, '.', '0')
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string, escaped as encoding/json
// escapes it without HTML escaping (SetEscapeHTML(false)): control
// characters, quotes, backslashes, U+2028 and U+2029; invalid UTF-8 becomes
// U+FFFD.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
