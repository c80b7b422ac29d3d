package fileid

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func keyOf(t *testing.T, path string) Key {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return Of(fi)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestKeyTellsVersionsApart(t *testing.T) {
	tests := []struct {
		name string
		// change does something to the file at path and returns the path
		// whose key is compared with path's key before the change.
		change func(t *testing.T, path string) string
		same   bool
	}{
		{"unchanged", func(t *testing.T, path string) string { return path }, true},
		{"hard link to the file", func(t *testing.T, path string) string {
			link := path + ".link"
			if err := os.Link(path, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, true},
		{"same content and time in another file", func(t *testing.T, path string) string {
			other := path + ".other"
			write(t, other, "one")
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(other, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			return other
		}, false},
		{"new modification time", func(t *testing.T, path string) string {
			mt := time.Now().Add(time.Hour)
			if err := os.Chtimes(path, mt, mt); err != nil {
				t.Fatal(err)
			}
			return path
		}, false},
		{"rebuilt and renamed into place", func(t *testing.T, path string) string {
			write(t, path+".tmp", "one")
			if err := os.Rename(path+".tmp", path); err != nil {
				t.Fatal(err)
			}
			return path
		}, false},
		{"rewritten in place, longer", func(t *testing.T, path string) string {
			write(t, path, "one more")
			return path
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a")
			write(t, path, "one")
			before := keyOf(t, path)
			after := keyOf(t, tt.change(t, path))
			if (after == before) != tt.same {
				t.Fatalf("key %+v then %+v: same = %v, want %v", before, after, after == before, tt.same)
			}
		})
	}
}

func TestOfFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a")
	write(t, path, "12345")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	want := Key{Dev: uint64(st.Dev), Ino: st.Ino, Size: 5, MtimeNano: fi.ModTime().UnixNano()}
	if got := Of(fi); got != want {
		t.Fatalf("Of = %+v, want %+v", got, want)
	}
}

func TestKeyString(t *testing.T) {
	if got := (Key{Dev: 1, Ino: 2, Size: 3, MtimeNano: 4}).String(); got != "1:2:3:4" {
		t.Errorf("got %q", got)
	}
}
