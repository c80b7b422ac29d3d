package mpwire

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Every appender writes what a general msgpack encoder writes for the
// same value (it picks the smallest form too), and the header sizes match.
func TestAgainstEncoder(t *testing.T) {
	enc := func(v any) []byte {
		var b bytes.Buffer
		e := msgpack.NewEncoder(&b)
		e.UseCompactInts(true)
		if err := e.Encode(v); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	for _, n := range []int{0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536} {
		s := strings.Repeat("x", n)
		if got, want := AppendStr(nil, s), enc(s); !bytes.Equal(got, want) {
			t.Errorf("AppendStr(%d bytes) = % x..., want % x...", n, got[:min(6, len(got))], want[:min(6, len(want))])
		}
		if got := AppendStr(nil, []byte(s)); !bytes.Equal(got, enc(s)) || StrHeaderSize(n) != len(got)-n {
			t.Errorf("AppendStr([]byte of %d) or StrHeaderSize(%d) = %d differ", n, n, StrHeaderSize(n))
		}
		b := []byte(s)
		if got, want := AppendBin(nil, b), enc(b); !bytes.Equal(got, want) {
			t.Errorf("AppendBin(%d bytes) = % x..., want % x...", n, got[:min(6, len(got))], want[:min(6, len(want))])
		}
		arr := make([]any, n)
		for i := range arr {
			arr[i] = nil
		}
		if got, want := AppendArrayHeader(nil, n), enc(arr)[:ContainerHeaderSize(n)]; !bytes.Equal(got, want) {
			t.Errorf("AppendArrayHeader(%d) = % x, want % x", n, got, want)
		}
		m := make(map[int]bool, n)
		for i := range n {
			m[i] = true
		}
		if got, want := AppendMapHeader(nil, n), enc(m)[:ContainerHeaderSize(n)]; !bytes.Equal(got, want) {
			t.Errorf("AppendMapHeader(%d) = % x, want % x", n, got, want)
		}
	}
	for _, i := range []int64{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64} {
		if got, want := AppendInt(nil, i), enc(i); !bytes.Equal(got, want) {
			t.Errorf("AppendInt(%d) = % x, want % x", i, got, want)
		}
	}
	if got, want := AppendFloat64(nil, 1.5), enc(1.5); !bytes.Equal(got, want) {
		t.Errorf("AppendFloat64 = % x, want % x", got, want)
	}
	if got := AppendUint64(nil, 1); !bytes.Equal(got, []byte{0xcf, 0, 0, 0, 0, 0, 0, 0, 1}) {
		t.Errorf("AppendUint64(1) = % x", got)
	}
	if got := AppendNil(nil); !bytes.Equal(got, enc(nil)) {
		t.Errorf("AppendNil = % x", got)
	}
}
