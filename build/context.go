package build

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// contextEntry is one file of a build context: in memory (data), read from
// an fs.FS, or from disk.
type contextEntry struct {
	name string // slash-separated path in the context
	mode int64
	dir  bool
	link string // symlink target
	data []byte
	fsys fs.FS  // with fsPath: read from here
	src  string // or: read from this host path
	size int64
}

// contextSet is a build context under assembly.
type contextSet struct{ entries map[string]contextEntry }

func newContext() *contextSet { return &contextSet{entries: map[string]contextEntry{}} }

func (c *contextSet) addDirs(name string) {
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := c.entries[d]; !ok {
			c.entries[d] = contextEntry{name: d, dir: true, mode: 0o755}
		}
	}
}

func (c *contextSet) addData(name string, data []byte) {
	c.addDirs(name)
	c.entries[name] = contextEntry{name: name, mode: 0o644, data: data, size: int64(len(data))}
}

// addFS adds every file of fsys under prefix.
func (c *contextSet) addFS(prefix string, fsys fs.FS) error {
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		name := path.Join(prefix, p)
		c.addDirs(name)
		c.entries[name] = contextEntry{name: name, mode: 0o644, fsys: fsys, src: p, size: info.Size()}
		return nil
	})
}

// defaultExcludes are left out of the application copied into a managed
// Python image: version control, caches, virtual environments, build output
// and artifacts (an artifact must never end up inside the next one).
var defaultExcludes = []string{
	".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox",
	"**/__pycache__", "**/*.pyc", "**/.mypy_cache", "**/.pytest_cache", "**/.ruff_cache",
	"build", "dist", "**/*.egg-info", "**/*.ociapp", "**/node_modules",
}

// addDir adds the files of a host directory under prefix, leaving out what
// the patterns (.dockerignore syntax) exclude, plus extra.
func (c *contextSet) addDir(prefix, dir string, patterns []string) error {
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return fmt.Errorf("invalid ignore pattern: %w", err)
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if excluded {
			// A later "!pattern" may re-include something below a
			// excluded directory; only then is walking it worthwhile.
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		name := path.Join(prefix, rel)
		c.addDirs(name)
		switch {
		case d.IsDir():
			c.entries[name] = contextEntry{name: name, dir: true, mode: 0o755}
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			c.entries[name] = contextEntry{name: name, link: target, mode: 0o777}
		case info.Mode().IsRegular():
			mode := int64(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			c.entries[name] = contextEntry{name: name, mode: mode, src: p, size: info.Size()}
		}
		return nil
	})
}

// readIgnoreFile reads a .dockerignore in dir; a missing one is empty.
func readIgnoreFile(dir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading .dockerignore: %w", err)
	}
	return patterns, nil
}

// writeTo writes the context as a tar with entries in name order and fixed
// owners and times, so an unchanged project gives the same bytes and the
// engine's layer cache hits.
func (c *contextSet) writeTo(w io.Writer) error {
	names := make([]string, 0, len(c.entries))
	for n := range c.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		e := c.entries[n]
		hdr := &tar.Header{Name: n, Mode: e.mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case e.dir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, n+"/"
		case e.link != "":
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.link
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if err := e.copyTo(tw); err != nil {
			return fmt.Errorf("adding %s to the build context: %w", n, err)
		}
	}
	return tw.Close()
}

func (e contextEntry) copyTo(w io.Writer) error {
	var r io.Reader
	switch {
	case e.fsys != nil:
		f, err := e.fsys.Open(e.src)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	case e.src != "":
		f, err := os.Open(e.src)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	default:
		_, err := w.Write(e.data)
		return err
	}
	// The file may have grown or shrunk since it was listed; the tar header
	// already holds the listed size.
	n, err := io.Copy(w, io.LimitReader(r, e.size))
	if err == nil && n != e.size {
		err = fmt.Errorf("file changed size during the build (%d bytes, was %d)", n, e.size)
	}
	return err
}

// writeTemp writes the context to a temporary file, returned at offset 0.
func (c *contextSet) writeTemp() (*os.File, error) {
	f, err := os.CreateTemp("", "ociapp-context-*.tar")
	if err != nil {
		return nil, err
	}
	if err := c.writeTo(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}
