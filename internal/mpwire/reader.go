package mpwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

var errShort = errors.New("msgpack data ends early")

// maxNesting bounds recursion when skipping values from a peer.
const maxNesting = 128

// Reader reads the msgpack forms of a frame's top-level map from a byte
// slice, without reflection; what it returns aliases the slice.
type Reader struct {
	b   []byte
	off int
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Done reports whether every byte has been read.
func (r *Reader) Done() bool { return r.off == len(r.b) }

// left returns the number of bytes not read yet.
func (r *Reader) left() int { return len(r.b) - r.off }

// Byte reads one byte: a type byte, or a value of one.
func (r *Reader) Byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

// take reads n bytes.
func (r *Reader) take(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, errShort
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s, nil
}

// length reads a big-endian length of size bytes.
func (r *Reader) length(size int) (int, error) {
	s, err := r.take(size)
	if err != nil {
		return 0, err
	}
	switch size {
	case 1:
		return int(s[0]), nil
	case 2:
		return int(binary.BigEndian.Uint16(s)), nil
	default:
		v := binary.BigEndian.Uint32(s)
		if uint64(v) > uint64(len(r.b)) { // cannot be satisfied; avoid int overflow on 32-bit
			return 0, errShort
		}
		return int(v), nil
	}
}

// Uint reads a non-negative integer of any msgpack integer form.
func (r *Reader) Uint() (uint64, error) {
	c, err := r.Byte()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		return uint64(c), nil
	case c >= 0xe0:
		return 0, errors.New("must not be negative")
	case c == 0xcc, c == 0xcd, c == 0xce, c == 0xcf, c == 0xd0, c == 0xd1, c == 0xd2, c == 0xd3:
		size := 1 << ((c - 0xcc) & 3)
		b, err := r.take(size)
		if err != nil {
			return 0, err
		}
		var v uint64
		for _, x := range b {
			v = v<<8 | uint64(x)
		}
		if c >= 0xd0 && b[0]&0x80 != 0 {
			return 0, errors.New("must not be negative")
		}
		return v, nil
	}
	return 0, fmt.Errorf("must be an integer, found %s", TypeName(c))
}

// MapLen reads a map header.
func (r *Reader) MapLen() (int, error) {
	c, err := r.Byte()
	if err != nil {
		return 0, err
	}
	switch {
	case c&0xf0 == 0x80:
		return int(c & 0x0f), nil
	case c == 0xde:
		return r.length(2)
	case c == 0xdf:
		return r.length(4)
	}
	r.off--
	return 0, fmt.Errorf("expected a map, found %s", TypeName(c))
}

// Str reads a string and returns its bytes, aliasing the input.
func (r *Reader) Str() ([]byte, error) {
	c, err := r.Byte()
	if err != nil {
		return nil, err
	}
	var n int
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9:
		n, err = r.length(1)
	case c == 0xda:
		n, err = r.length(2)
	case c == 0xdb:
		n, err = r.length(4)
	default:
		r.off--
		return nil, fmt.Errorf("expected a string, found %s", TypeName(c))
	}
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// BinOrNil reads a bin value or nil. A nil returns (nil, nil); an empty bin
// returns a non-nil empty slice so that the two stay distinct.
func (r *Reader) BinOrNil() ([]byte, error) {
	c, err := r.Byte()
	if err != nil {
		return nil, err
	}
	var n int
	switch c {
	case 0xc0:
		return nil, nil
	case 0xc4:
		n, err = r.length(1)
	case 0xc5:
		n, err = r.length(2)
	case 0xc6:
		n, err = r.length(4)
	default:
		r.off--
		return nil, fmt.Errorf("expected bin or nil, found %s", TypeName(c))
	}
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// Skip passes over one complete value of any type.
func (r *Reader) Skip() error { return r.skip(0) }

func (r *Reader) skip(depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("msgpack nesting deeper than %d", maxNesting)
	}
	c, err := r.Byte()
	if err != nil {
		return err
	}
	var n, items int
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		return nil
	case c&0xf0 == 0x80:
		items = 2 * int(c&0x0f)
	case c&0xf0 == 0x90:
		items = int(c & 0x0f)
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	default:
		switch c {
		case 0xc4, 0xd9:
			n, err = r.length(1)
		case 0xc5, 0xda:
			n, err = r.length(2)
		case 0xc6, 0xdb:
			n, err = r.length(4)
		case 0xcc, 0xd0:
			n = 1
		case 0xcd, 0xd1:
			n = 2
		case 0xca, 0xce, 0xd2:
			n = 4
		case 0xcb, 0xcf, 0xd3:
			n = 8
		case 0xd4:
			n = 2
		case 0xd5:
			n = 3
		case 0xd6:
			n = 5
		case 0xd7:
			n = 9
		case 0xd8:
			n = 17
		case 0xc7:
			n, err = r.length(1)
			n++
		case 0xc8:
			n, err = r.length(2)
			n++
		case 0xc9:
			n, err = r.length(4)
			n++
		case 0xdc:
			items, err = r.length(2)
		case 0xdd:
			items, err = r.length(4)
		case 0xde:
			items, err = r.length(2)
			items *= 2
		case 0xdf:
			items, err = r.length(4)
			items *= 2
		default: // 0xc1 is never used
			return fmt.Errorf("invalid msgpack type byte 0x%02x", c)
		}
	}
	if err != nil {
		return err
	}
	if _, err := r.take(n); err != nil {
		return err
	}
	for range items {
		if err := r.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

// TypeName names the msgpack type of type byte c, for errors.
func TypeName(c byte) string {
	switch {
	case c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3):
		return "an integer"
	case c&0xf0 == 0x80 || c == 0xde || c == 0xdf:
		return "a map"
	case c&0xf0 == 0x90 || c == 0xdc || c == 0xdd:
		return "an array"
	case c&0xe0 == 0xa0 || (c >= 0xd9 && c <= 0xdb):
		return "a string"
	case c >= 0xc4 && c <= 0xc6:
		return "bin"
	case c == 0xc0:
		return "nil"
	case c == 0xc2 || c == 0xc3:
		return "a boolean"
	case c == 0xca || c == 0xcb:
		return "a float"
	}
	return fmt.Sprintf("type byte 0x%02x", c)
}

// Int reads an integer of any msgpack form, signed or not; one above
// math.MaxInt64 reads as math.MaxInt64.
func (r *Reader) Int() (int64, error) {
	c, err := r.Byte()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	case c >= 0xcc && c <= 0xd3:
		b, err := r.take(1 << ((c - 0xcc) & 3))
		if err != nil {
			return 0, err
		}
		var v uint64
		for _, x := range b {
			v = v<<8 | uint64(x)
		}
		if c <= 0xcf { // unsigned
			return int64(min(v, math.MaxInt64)), nil
		}
		shift := 64 - 8*len(b) // sign-extend
		return int64(v<<shift) >> shift, nil
	}
	r.off--
	return 0, fmt.Errorf("must be an integer, found %s", TypeName(c))
}

// Bool reads a boolean.
func (r *Reader) Bool() (bool, error) {
	c, err := r.Byte()
	if err != nil {
		return false, err
	}
	switch c {
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	}
	r.off--
	return false, fmt.Errorf("must be a boolean, found %s", TypeName(c))
}

// MaxMapKeys bounds the keys of a map WalkMap reads: the envelopes and
// frames it serves have a handful, and the bound keeps the check for
// duplicate keys linear in the frame's size.
const MaxMapKeys = 16

// WalkMap reads body as one msgpack map of at most MaxMapKeys string keys,
// none twice, calling field for each key with the reader at its value;
// field reads or skips the value. The key aliases body (a switch on
// string(key) does not copy it). The map must span the whole body.
func WalkMap(body []byte, field func(key []byte, r *Reader) error) error {
	r := NewReader(body)
	n, err := r.MapLen()
	if err != nil {
		return err
	}
	if n > MaxMapKeys {
		return fmt.Errorf("a map of %d keys, more than %d", n, MaxMapKeys)
	}
	var seen [MaxMapKeys][]byte
	for i := range n {
		k, err := r.Str()
		if err != nil {
			return fmt.Errorf("key: %w", err)
		}
		for _, prev := range seen[:i] {
			if string(prev) == string(k) {
				return fmt.Errorf("duplicate key %q", k)
			}
		}
		seen[i] = k
		if err := field(k, r); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	if !r.Done() {
		return fmt.Errorf("%d bytes after the map", r.left())
	}
	return nil
}
