package mpwire

import (
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestReaderIntAgainstEncoder(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxInt32, math.MaxInt32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64} {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		r := NewReader(b)
		got, err := r.Int()
		if err != nil || got != v || !r.Done() {
			t.Errorf("Int of %d (% x) = %d, %v, done %v", v, b, got, err, r.Done())
		}
	}
	b, _ := msgpack.Marshal(uint64(math.MaxUint64))
	if got, err := NewReader(b).Int(); err != nil || got != math.MaxInt64 {
		t.Errorf("Int of MaxUint64 = %d, %v; want MaxInt64", got, err)
	}
}

func TestReaderBool(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want bool
		err  string
	}{
		{[]byte{0xc3}, true, ""},
		{[]byte{0xc2}, false, ""},
		{[]byte{0xc0}, false, "must be a boolean, found nil"},
		{[]byte{0x01}, false, "must be a boolean, found an integer"},
		{nil, false, "ends early"},
	} {
		got, err := NewReader(tc.in).Bool()
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Bool(% x) = %v, %v; want %v, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestWalkMap(t *testing.T) {
	many := AppendMapHeader(nil, MaxMapKeys+1)
	for i := range MaxMapKeys + 1 {
		many = AppendStr(many, strings.Repeat("k", i+1))
		many = AppendNil(many)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		keys string
		err  string
	}{
		{"two keys", AppendNil(AppendStr(AppendNil(AppendStr(AppendMapHeader(nil, 2), "a")), "b")), "a,b", ""},
		{"empty map", AppendMapHeader(nil, 0), "", ""},
		{"duplicate key", AppendNil(AppendStr(AppendNil(AppendStr(AppendMapHeader(nil, 2), "a")), "a")), "a", `duplicate key "a"`},
		{"too many keys", many, "", "more than 16"},
		{"bytes after", append(AppendMapHeader(nil, 0), 0xc0), "", "1 bytes after the map"},
		{"not a map", AppendNil(nil), "", "expected a map, found nil"},
		{"key not a string", AppendNil(AppendInt(AppendMapHeader(nil, 1), 1)), "", "expected a string, found an integer"},
		{"value cut short", AppendStr(AppendMapHeader(nil, 1), "a"), "a", "a: msgpack data ends early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var keys []string
			err := WalkMap(tc.in, func(key []byte, r *Reader) error {
				keys = append(keys, string(key))
				return r.Skip()
			})
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
			if got := strings.Join(keys, ","); got != tc.keys {
				t.Errorf("keys = %q, want %q", got, tc.keys)
			}
		})
	}
}

// FuzzReaderSkip feeds Skip and WalkMap any input: they never panic, and a
// value Skip passes over is the same whatever bytes follow it.
func FuzzReaderSkip(f *testing.F) {
	for _, v := range []any{nil, 1, -1, "s", []byte{1}, map[string]any{"a": []any{1, "b"}}, 1.5} {
		b, _ := msgpack.Marshal(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = WalkMap(b, func(_ []byte, r *Reader) error { return r.Skip() })
		r := NewReader(b)
		if r.Skip() != nil {
			return
		}
		used := len(b) - r.left()
		r = NewReader(append(b[:used:used], 0xc1, 0xc1))
		if err := r.Skip(); err != nil || r.left() != 2 {
			t.Fatalf("% x: skipping the same value with bytes after it: %v, %d left", b[:used], err, r.left())
		}
	})
}
