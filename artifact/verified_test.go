package artifact

import (
	"io"
	"testing"
)

// TestOpenVerifiedFile: a file opened again with the digest found before
// reads the same, and what it no longer hashes is still caught where it
// matters: documents when read, layers against the config, the file when
// it is copied.
func TestOpenVerifiedFile(t *testing.T) {
	good := saveFile(t, "good.ociapp", writeArtifact(t, testImage(t, map[string]string{"etc/a": "a"}, map[string]string{"etc/b": "b"}), testMetadata))
	first, err := Open(t.Context(), good)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Open(t.Context(), good, WithVerifiedFile(first.FileDigest()), WithDeferredLayerCheck())
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != first.Digest || again.ConfigDigest != first.ConfigDigest || again.FileDigest() != first.FileDigest() || again.Metadata.Name != first.Metadata.Name {
		t.Fatalf("reopened as %v %v %v, first %v %v %v", again.Digest, again.ConfigDigest, again.FileDigest(), first.Digest, first.ConfigDigest, first.FileDigest())
	}
	if err := again.WriteDockerArchive(t.Context(), io.Discard); err != nil {
		t.Fatal(err)
	}

	layerFlipped := edited(t, func(t *testing.T, f *archiveFiles) {
		d := f.manifest(t).Layers[0].Digest
		f.set(blobPath(d), flipByte(f.get(t, blobPath(d))))
	})
	configFlipped := edited(t, func(t *testing.T, f *archiveFiles) {
		d := f.manifest(t).Config.Digest
		f.set(blobPath(d), flipByte(f.get(t, blobPath(d))))
	})
	for _, tt := range []struct {
		name string
		data []byte
		// openFault is what Open with a remembered digest says; 0 means it
		// opens, and the layers' check says FaultDigestMismatch.
		openFault Fault
	}{
		{"a layer changed", layerFlipped, 0},
		{"the config changed", configFlipped, FaultDigestMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := saveFile(t, "changed.ociapp", tt.data)
			_, err := Open(t.Context(), path, WithDeferredLayerCheck())
			assertFault(t, err, FaultDigestMismatch)
			a, err := Open(t.Context(), path, WithVerifiedFile(first.FileDigest()), WithDeferredLayerCheck())
			if tt.openFault != 0 {
				assertFault(t, err, tt.openFault)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := a.CheckLayers(t.Context()); err == nil {
				t.Fatal("CheckLayers accepted a changed layer")
			}
			if err := a.WriteDockerArchive(t.Context(), io.Discard); err == nil {
				t.Fatal("WriteDockerArchive wrote a changed file")
			}
		})
	}
}
