package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

type tarEntry struct {
	name, data, link string
	typ              byte
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: typ, Linkname: e.link}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readTar(t *testing.T, data []byte) (names []string, files map[string]string) {
	t.Helper()
	files = map[string]string{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		names = append(names, hdr.Name)
		files[hdr.Name] = string(b)
	}
}

func TestUntagArchive(t *testing.T) {
	in := makeTar(t, []tarEntry{
		{name: "manifest.json", data: `[{"Config":"c","RepoTags":["debian:12"],"repotags":["x:1"],"Layers":["l"]}]`},
		{name: "./index.json", data: `{"schemaVersion":2,"manifests":[{"digest":"sha256:aa","annotations":{"io.containerd.image.name":"docker.io/library/debian:12","org.opencontainers.image.ref.name":"12","keep":"me"}}],"MANIFESTS":[{"Annotations":{"io.containerd.image.name":"debian:12"}}]}`},
		{name: "repositories", data: `{"debian":{"12":"abc"}}`},
		// A directory link through which an unpacking loader would write
		// over the manifest.json before it.
		{name: "d", typ: tar.TypeSymlink, link: "."},
		{name: "d/manifest.json", data: `[{"Config":"c","RepoTags":["debian:12"]}]`},
		{name: "blobs/sha256/aa", data: "blob"},
	})
	var out bytes.Buffer
	if err := untagArchive(bytes.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	names, files := readTar(t, out.Bytes())
	if got := strings.Join(names, ","); got != "d,d/manifest.json,blobs/sha256/aa,index.json,manifest.json" {
		t.Fatalf("entries %s: want the rewritten files last and no repositories", got)
	}
	for _, name := range []string{"index.json", "manifest.json"} {
		for _, bad := range []string{"debian", "RepoTags", "repotags", "io.containerd.image.name", "ref.name", "x:1"} {
			if strings.Contains(files[name], bad) {
				t.Errorf("%s still holds %q: %s", name, bad, files[name])
			}
		}
	}
	var m []map[string]any
	if err := json.Unmarshal([]byte(files["manifest.json"]), &m); err != nil || m[0]["Config"] != "c" {
		t.Fatalf("manifest.json %s: %v", files["manifest.json"], err)
	}
	if !strings.Contains(files["index.json"], `"keep":"me"`) || !strings.Contains(files["index.json"], `sha256:aa`) {
		t.Fatalf("index.json lost more than names: %s", files["index.json"])
	}
}

func TestUntagArchiveRefuses(t *testing.T) {
	tests := map[string][]tarEntry{
		"linked manifest":   {{name: "blobs/x", data: `[]`}, {name: "manifest.json", typ: tar.TypeSymlink, link: "blobs/x"}},
		"hard-linked index": {{name: "blobs/x", data: `{}`}, {name: "index.json", typ: tar.TypeLink, link: "blobs/x"}},
		"bad manifest json": {{name: "manifest.json", data: `{`}},
		"bad annotations":   {{name: "index.json", data: `{"manifests":[{"annotations":"x"}]}`}},
	}
	for name, entries := range tests {
		t.Run(name, func(t *testing.T) {
			if err := untagArchive(bytes.NewReader(makeTar(t, entries)), io.Discard); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestWriteUntaggedReportsTheWriter(t *testing.T) {
	boom := errors.New("boom")
	err := writeUntagged(t.Context(), io.Discard, func(ctx context.Context, w io.Writer) error {
		_, _ = w.Write(makeTar(t, []tarEntry{{name: "a", data: "x"}})[:600])
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the writer's error", err)
	}
	// Bytes after the end marker are drained, so the writer finishes.
	err = writeUntagged(t.Context(), io.Discard, func(ctx context.Context, w io.Writer) error {
		_, err := w.Write(append(makeTar(t, []tarEntry{{name: "a", data: "x"}}), make([]byte, 4096)...))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func FuzzUntag(f *testing.F) {
	f.Add([]byte(`[{"RepoTags":["a:b"],"Config":"c"}]`))
	f.Add([]byte(`{"manifests":[{"annotations":{"io.containerd.image.name":"x"}}]}`))
	f.Add([]byte(`{"Manifests":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Decode the output as the loaders do (Go structs, keys matched
		// case-insensitively): no name may survive.
		if out, err := untagManifest(data); err == nil {
			var m []struct{ RepoTags []string }
			if json.Unmarshal(out, &m) == nil {
				for _, e := range m {
					if len(e.RepoTags) > 0 {
						t.Fatalf("tags left: %s", out)
					}
				}
			}
		}
		if out, err := untagIndex(data); err == nil {
			var idx struct {
				Manifests []struct{ Annotations map[string]string }
			}
			if json.Unmarshal(out, &idx) == nil {
				for _, d := range idx.Manifests {
					for _, n := range nameAnnotations {
						if _, ok := d.Annotations[n]; ok {
							t.Fatalf("names left: %s", out)
						}
					}
				}
			}
		}
	})
}
