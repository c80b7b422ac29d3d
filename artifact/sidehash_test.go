package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// sideHash's digest is sha256's, whatever the sizes of the writes relative
// to its chunks, and a writer may reuse its buffer at once.
func TestSideHash(t *testing.T) {
	data := make([]byte, 3*sideHashChunk*sideHashBuffers+17)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	want := sha256.Sum256(data)
	for _, tc := range []struct {
		name  string
		write int
	}{
		{"nothing", 0},
		{"bytes", 1},
		{"odd", 4093},
		{"chunk", sideHashChunk},
		{"chunk+1", sideHashChunk + 1},
		{"all at once", len(data)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSideHash()
			defer s.Close()
			in := data
			if tc.write == 0 {
				in = nil
			}
			buf := make([]byte, max(tc.write, 1))
			for len(in) > 0 {
				n := copy(buf, in)
				if _, err := s.Write(buf[:n]); err != nil {
					t.Fatal(err)
				}
				clear(buf) // the caller's buffer is its own again
				in = in[n:]
			}
			wantHex := hex.EncodeToString(want[:])
			if tc.write == 0 {
				empty := sha256.Sum256(nil)
				wantHex = hex.EncodeToString(empty[:])
			}
			if got := s.Sum(); got.Hex != wantHex || got.Algorithm != "sha256" {
				t.Errorf("Sum = %v, want sha256:%s", got, wantHex)
			}
		})
	}
}

// Close without Sum ends the goroutine (the package's goleak check finds
// one left), whatever was written; Close and Sum after it do no harm.
func TestSideHashClose(t *testing.T) {
	s := newSideHash()
	s.Write(make([]byte, sideHashChunk*(sideHashBuffers+2)))
	s.Close()
	s.Close()
	done := newSideHash()
	done.Write([]byte("x"))
	done.Sum()
	done.Close()
}

// A small file takes one chunk; a large one at most sideHashBuffers.
func TestSideHashAllocatesChunksAsNeeded(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		maxChunks int
	}{
		{"small", 9 << 10, 1},
		{"two chunks", sideHashChunk + 1, 2},
		{"large", sideHashChunk * sideHashBuffers * 4, sideHashBuffers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSideHash()
			defer s.Close()
			s.Write(make([]byte, tc.size))
			if got := sideHashBuffers - s.spare; got > tc.maxChunks {
				t.Errorf("%d bytes took %d chunks, want at most %d", tc.size, got, tc.maxChunks)
			}
		})
	}
}
