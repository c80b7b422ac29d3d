package build

import (
	"archive/tar"
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestRenderContainerfileGolden(t *testing.T) {
	cases := []struct {
		golden string
		p      Project
	}{
		{"managed-python.Containerfile", Project{
			Language: Python, Name: "echo-app", Version: "0.1.0", Mode: ModeManaged,
			Entrypoint: "echo_app.main:app", SystemPackages: []string{"jq", "tini", "libpq5=15.8-0+deb12u1"},
			Dependencies: []string{"ociapp", "pydantic>=2"},
		}},
		{"managed-python-minimal.Containerfile", Project{
			Language: Python, Name: "tiny", Version: "1.0", Mode: ModeManaged,
			Entrypoint: "tiny:app", BaseImage: "ociapp-local/python:3.13",
		}},
	}
	for _, c := range cases {
		t.Run(c.golden, func(t *testing.T) {
			got, err := RenderContainerfile(&c.p)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", c.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./build -run Golden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Containerfile differs from %s (rerun with -update if intended):\n%s", path, got)
			}
		})
	}
}

// contextFiles lists a context tar's entries and their contents.
func contextFiles(t *testing.T, c *contextSet) (map[string]string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := c.writeTo(&buf); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, buf.Bytes()
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[hdr.Name] = string(b)
	}
}

func TestPythonContext(t *testing.T) {
	root := writeProject(t, map[string]string{
		"pyproject.toml":                validPyproject,
		"src/demo/main.py":              "app = 1\n",
		"src/demo/__pycache__/x.pyc":    "cache",
		".venv/bin/python":              "venv",
		".git/HEAD":                     "ref",
		"dist/demo-app-1.2.3.ociapp":    "old artifact",
		"demo-app-1.2.3.ociapp":         "old artifact",
		"notes/secret.txt":              "secret",
		"notes/keep.txt":                "keep",
		".dockerignore":                 "notes\n!notes/keep.txt\n",
		"src/demo.egg-info/PKG-INFO":    "x",
		"tests/test_main.py":            "def test(): pass\n",
		"src/demo/data/template.txt":    "data",
		"src/demo/data/nested/more.txt": "more",
	})
	p, err := LoadProject(root)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pythonContext(p)
	if err != nil {
		t.Fatal(err)
	}
	files, first := contextFiles(t, c)
	for _, want := range []string{
		"Containerfile", "ociapp/build-requirements.txt", "ociapp/requirements.txt",
		"ociapp/sdk/pyproject.toml", "ociapp/sdk/src/ociapp/__init__.py",
		"app/pyproject.toml", "app/src/demo/main.py", "app/notes/keep.txt", "app/tests/test_main.py",
		"app/src/demo/data/nested/more.txt",
	} {
		if _, ok := files[want]; !ok {
			t.Errorf("context lacks %s", want)
		}
	}
	for name := range files {
		for _, bad := range []string{"__pycache__", ".venv", ".git/", "ociapp/dist", ".ociapp", "secret", "egg-info"} {
			if strings.Contains(name, bad) {
				t.Errorf("context holds %s", name)
			}
		}
	}
	if got := files["ociapp/build-requirements.txt"]; got != "setuptools>=64\n" {
		t.Errorf("build requirements %q: want the SDK's and the app's, deduplicated", got)
	}
	if got := files["ociapp/requirements.txt"]; got != "pydantic>=2\nociapp\n" {
		t.Errorf("requirements %q", got)
	}

	// Same project, same bytes: the engine's cache depends on it.
	c2, _ := pythonContext(p)
	if _, second := contextFiles(t, c2); !bytes.Equal(first, second) {
		t.Error("two contexts of the same project differ")
	}
	// A code change touches only app/.
	if err := os.WriteFile(filepath.Join(root, "src/demo/main.py"), []byte("app = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c3, _ := pythonContext(p)
	changed, _ := contextFiles(t, c3)
	for name, content := range files {
		if changed[name] != content && !strings.HasPrefix(name, "app/") {
			t.Errorf("a code change changed %s", name)
		}
	}
}

func TestContextExecutableBitsAndLinks(t *testing.T) {
	root := writeProject(t, map[string]string{"run.sh": "#!/bin/sh\n", "data.txt": "x"})
	if err := os.Chmod(filepath.Join(root, "run.sh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("data.txt", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	c := newContext()
	if err := c.addDir("", root, nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.writeTo(&buf); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		names = append(names, hdr.Name)
		if hdr.ModTime.Unix() != 0 || hdr.Uid != 0 {
			t.Errorf("%s: mtime %v uid %d", hdr.Name, hdr.ModTime, hdr.Uid)
		}
		switch hdr.Name {
		case "run.sh":
			if hdr.Mode != 0o755 {
				t.Errorf("run.sh mode %o, want 755", hdr.Mode)
			}
		case "data.txt":
			if hdr.Mode != 0o644 {
				t.Errorf("data.txt mode %o, want 644", hdr.Mode)
			}
		case "link":
			if hdr.Typeflag != tar.TypeSymlink || hdr.Linkname != "data.txt" {
				t.Errorf("link: %+v", hdr)
			}
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}
}
