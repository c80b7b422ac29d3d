package artifact

import (
	"strings"
	"testing"
)

// BenchmarkOpen opens an artifact of 64 MiB of uncompressed layers that
// compress about 3:1, like a Python image's: the scan hashes the file and
// its blobs, and verifyLayers decompresses every layer to check its diff
// ID unless that is deferred.
func BenchmarkOpen(b *testing.B) {
	var layers []map[string]string
	x := uint64(88172645463325252)
	words := strings.Fields("def class import return self value request response json schema async await yield lambda none true false")
	for range 4 {
		var sb strings.Builder
		for sb.Len() < 16<<20 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			sb.WriteString(words[x%uint64(len(words))])
			sb.WriteByte(" \n"[x>>32%2])
			sb.WriteByte(byte('a' + x>>40%26))
		}
		layers = append(layers, map[string]string{"lib/module.py": sb.String()})
	}
	path := saveFile(b, "bench.ociapp", writeArtifact(b, testImage(b, layers...), testMetadata))
	a, err := Open(b.Context(), path)
	if err != nil {
		b.Fatal(err)
	}
	var expanded int64
	for _, n := range a.expanded {
		expanded += n
	}
	b.Run("layers checked", func(b *testing.B) {
		b.SetBytes(expanded)
		for b.Loop() {
			if _, err := Open(b.Context(), path); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(expanded)/float64(a.Size), "expansion")
	})
	// As a runtime opens a file it has not verified before: every blob
	// hashed, and the whole file, but no layer decompressed.
	b.Run("layers deferred", func(b *testing.B) {
		b.SetBytes(a.Size)
		for b.Loop() {
			if _, err := Open(b.Context(), path, WithDeferredLayerCheck()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
