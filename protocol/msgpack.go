package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ociapp/ociapp/internal/mpwire"
)

// The envelope codec reads and writes the few msgpack forms an envelope uses
// directly, without reflection: envelopes sit on every request's path.

var errShort = errors.New("msgpack data ends early")

// maxNesting bounds recursion when skipping values from a peer.
const maxNesting = 128

type mpReader struct {
	b   []byte
	off int
}

func (r *mpReader) done() bool { return r.off == len(r.b) }

func (r *mpReader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *mpReader) take(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, errShort
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s, nil
}

func (r *mpReader) uint(size int) (int, error) {
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

// uintValue reads a non-negative integer of any msgpack integer form.
func (r *mpReader) uintValue() (uint64, error) {
	c, err := r.byte()
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
	return 0, fmt.Errorf("must be an integer, found %s", typeName(c))
}

// mapLen reads a map header.
func (r *mpReader) mapLen() (int, error) {
	c, err := r.byte()
	if err != nil {
		return 0, err
	}
	switch {
	case c&0xf0 == 0x80:
		return int(c & 0x0f), nil
	case c == 0xde:
		return r.uint(2)
	case c == 0xdf:
		return r.uint(4)
	}
	r.off--
	return 0, fmt.Errorf("expected a map, found %s", typeName(c))
}

// str reads a string and returns its bytes, aliasing the input.
func (r *mpReader) str() ([]byte, error) {
	c, err := r.byte()
	if err != nil {
		return nil, err
	}
	var n int
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9:
		n, err = r.uint(1)
	case c == 0xda:
		n, err = r.uint(2)
	case c == 0xdb:
		n, err = r.uint(4)
	default:
		r.off--
		return nil, fmt.Errorf("expected a string, found %s", typeName(c))
	}
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// binOrNil reads a bin value or nil. A nil returns (nil, nil); an empty bin
// returns a non-nil empty slice so that the two stay distinct.
func (r *mpReader) binOrNil() ([]byte, error) {
	c, err := r.byte()
	if err != nil {
		return nil, err
	}
	var n int
	switch c {
	case 0xc0:
		return nil, nil
	case 0xc4:
		n, err = r.uint(1)
	case 0xc5:
		n, err = r.uint(2)
	case 0xc6:
		n, err = r.uint(4)
	default:
		r.off--
		return nil, fmt.Errorf("expected bin or nil, found %s", typeName(c))
	}
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// skip passes over one complete value of any type.
func (r *mpReader) skip(depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("msgpack nesting deeper than %d", maxNesting)
	}
	c, err := r.byte()
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
			n, err = r.uint(1)
		case 0xc5, 0xda:
			n, err = r.uint(2)
		case 0xc6, 0xdb:
			n, err = r.uint(4)
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
			n, err = r.uint(1)
			n++
		case 0xc8:
			n, err = r.uint(2)
			n++
		case 0xc9:
			n, err = r.uint(4)
			n++
		case 0xdc:
			items, err = r.uint(2)
		case 0xdd:
			items, err = r.uint(4)
		case 0xde:
			items, err = r.uint(2)
			items *= 2
		case 0xdf:
			items, err = r.uint(4)
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

func typeName(c byte) string {
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

// appendBinOrNil writes b as bin, or nil when b is nil.
func appendBinOrNil(dst, b []byte) []byte {
	if b == nil {
		return mpwire.AppendNil(dst)
	}
	return mpwire.AppendBin(dst, b)
}
