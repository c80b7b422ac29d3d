package python

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSDKHoldsThePackageSource(t *testing.T) {
	var files []string
	err := fs.WalkDir(SDK(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"pyproject.toml",
		"README.md",
		"src/ociapp/__init__.py",
		"src/ociapp/__main__.py",
		"src/ociapp/cli.py",
		"src/ociapp/server.py",
		"src/ociapp/py.typed",
	} {
		if !slices.Contains(files, want) {
			t.Errorf("SDK() lacks %s; it holds %v", want, files)
		}
	}
	for _, f := range files {
		if strings.HasPrefix(f, "tests/") || strings.Contains(f, "__pycache__") || strings.HasSuffix(f, ".pyc") {
			t.Errorf("SDK() holds %s, which pip install does not need", f)
		}
	}
}

// Every module of the package on disk is embedded: a new module that the
// embed patterns missed would break installed SDKs only at import time.
func TestSDKHoldsEveryModule(t *testing.T) {
	modules, err := filepath.Glob(filepath.Join("src", "ociapp", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range modules {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.IsDir() {
			if info.Name() != "__pycache__" {
				t.Errorf("%s: subpackages are not embedded; add them to the go:embed patterns", path)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fs.ReadFile(SDK(), filepath.ToSlash(path))
		if err != nil {
			t.Errorf("%s is not embedded: %v", path, err)
			continue
		}
		if string(got) != string(want) {
			t.Errorf("%s: embedded copy differs from the file", path)
		}
	}
}
