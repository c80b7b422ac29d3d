// Package mpwire reads and writes msgpack's wire format by hand, one
// element at a time, for the codecs on every request's path: envelopes,
// the daemon's channel frames, payloads streamed without building values.
package mpwire

import (
	"encoding/binary"
	"math"
)

// AppendMapHeader appends the header of a map of n pairs, in the smallest form.
func AppendMapHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xde), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdf), uint32(n))
}

// AppendArrayHeader appends the header of an array of n elements, in the
// smallest form.
func AppendArrayHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdd), uint32(n))
}

// ContainerHeaderSize is the length of the header AppendMapHeader and
// AppendArrayHeader write for n.
func ContainerHeaderSize(n int) int {
	switch {
	case n < 16:
		return 1
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

// AppendStr appends s as a msgpack str, in the smallest form.
func AppendStr[S string | []byte](dst []byte, s S) []byte {
	switch n := len(s); {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
	return append(dst, s...)
}

// StrHeaderSize is the length of the header AppendStr writes for a string
// of n bytes.
func StrHeaderSize(n int) int {
	switch {
	case n < 32:
		return 1
	case n <= math.MaxUint8:
		return 2
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

// AppendBin appends b as msgpack bin, in the smallest form.
func AppendBin(dst, b []byte) []byte {
	switch n := len(b); {
	case n <= math.MaxUint8:
		dst = append(dst, 0xc4, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
	}
	return append(dst, b...)
}

// AppendNil appends msgpack's nil.
func AppendNil(dst []byte) []byte { return append(dst, 0xc0) }

// AppendInt appends i as the smallest msgpack integer that holds it.
func AppendInt(dst []byte, i int64) []byte {
	switch {
	case i >= 0 && i <= 0x7f:
		return append(dst, byte(i))
	case i >= 0 && i <= math.MaxUint8:
		return append(dst, 0xcc, byte(i))
	case i >= 0 && i <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(i))
	case i >= 0 && i <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(i))
	case i >= 0:
		return AppendUint64(dst, uint64(i))
	case i >= -32:
		return append(dst, byte(i))
	case i >= math.MinInt8:
		return append(dst, 0xd0, byte(i))
	case i >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(i))
	case i >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(i))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(i))
}

// AppendUint64 appends u as a uint 64 (0xcf and eight bytes) whatever its
// value, so that it has a fixed length.
func AppendUint64(dst []byte, u uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), u)
}

// AppendFloat64 appends f as a float 64.
func AppendFloat64(dst []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, 0xcb), math.Float64bits(f))
}
