package build

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Mode is how an image is built.
type Mode string

const (
	// ModeManaged: ociapp-build writes the image recipe itself.
	ModeManaged Mode = "managed"
	// ModeCustom: the project's own Containerfile.
	ModeCustom Mode = "custom"
)

// Language is what a managed build compiles or installs.
type Language string

const (
	// Python projects are configured in pyproject.toml.
	Python Language = "python"
	// Go projects are configured in ociapp.toml.
	Go Language = "go"
)

// Config file names at a project root.
const (
	PyprojectFile = "pyproject.toml"
	OCIAppFile    = "ociapp.toml"
)

// Project is a project's build configuration, validated.
type Project struct {
	// Root is the absolute project root.
	Root string
	// ConfigFile is the absolute path of the file the configuration came
	// from: pyproject.toml or ociapp.toml.
	ConfigFile string
	// Language is Python for pyproject.toml projects and Go for ociapp.toml
	// ones.
	Language Language
	// Name and Version name the artifact: {Name}-{Version}.ociapp.
	Name    string
	Version string
	Mode    Mode
	// Entrypoint is, in managed mode, the application: "pkg.module:attr"
	// for Python, the main package (e.g. "." or "./cmd/app") for Go.
	Entrypoint string
	// SystemPackages are Debian packages a managed Python image installs.
	SystemPackages []string
	// Containerfile is, in custom mode, the Containerfile's path relative
	// to Root, slash-separated.
	Containerfile string
	// BaseImage overrides the default base image ("" means the default).
	BaseImage string
	// Dependencies are a Python project's [project].dependencies and
	// BuildRequires its [build-system].requires.
	Dependencies  []string
	BuildRequires []string
}

// ArtifactName is the artifact's file name: {name}-{version}.ociapp.
func (p *Project) ArtifactName() string { return p.Name + "-" + p.Version + ".ociapp" }

// NeedsEngine reports whether building the project needs a container engine:
// managed Python and custom builds do; managed Go builds do only to read a
// base image given by name.
func (p *Project) NeedsEngine() bool {
	if p.Mode == ModeCustom || p.Language == Python {
		return true
	}
	return p.BaseImage != "" && !isImageFile(p.Root, p.BaseImage)
}

// ConfigError is a build configuration problem. Its message names the file,
// the key, what is wrong and how to fix it.
type ConfigError struct {
	File    string // the configuration file (or the one that is missing)
	Key     string // the offending key, e.g. "tool.ociapp-build.entrypoint"; "" for the file itself
	Problem string // what is wrong
	Fix     string // what to do about it
	Err     error  // underlying error, if any
}

func (e *ConfigError) Error() string {
	msg := e.File + ": " + e.Problem
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Fix != "" {
		msg += "; " + e.Fix
	}
	return msg
}

func (e *ConfigError) Unwrap() error { return e.Err }

// pythonEntrypoint is what the Python SDK's loader accepts: pkg.module:attr.
var pythonEntrypoint = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// debianPackage is a Debian package name, optionally with =version or :arch;
// anything else would be interpreted by the shell running apt-get.
var debianPackage = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$`)

// imageRef is a loose check of an image reference; the engine has the final word.
var imageRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@-]*$`)

// LoadProject reads and validates the build configuration of the project at
// root: [tool.ociapp-build] in pyproject.toml (Python) or ociapp.toml (Go).
// Every problem is a *ConfigError.
func LoadProject(root string) (*Project, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("loading project: %w", err)
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return nil, &ConfigError{File: abs, Problem: "the project root is not a directory", Fix: "pass the directory that holds pyproject.toml or ociapp.toml", Err: err}
	}
	pyproject := filepath.Join(abs, PyprojectFile)
	ociappToml := filepath.Join(abs, OCIAppFile)
	hasPy, hasOCIApp := fileExists(pyproject), fileExists(ociappToml)
	switch {
	case hasOCIApp:
		if hasPy {
			if raw, err := readTOML(pyproject); err == nil {
				if tool, ok := raw["tool"].(map[string]any); ok && tool["ociapp-build"] != nil {
					return nil, &ConfigError{File: ociappToml, Problem: "both ociapp.toml and [tool.ociapp-build] in pyproject.toml configure the build",
						Fix: "keep one: [tool.ociapp-build] in pyproject.toml for a Python app, ociapp.toml for a Go app"}
				}
			}
		}
		return loadOCIAppToml(abs, ociappToml)
	case hasPy:
		return loadPyproject(abs, pyproject)
	}
	return nil, &ConfigError{File: pyproject, Problem: "missing pyproject.toml at " + pyproject,
		Fix: "run ociapp-build on a project root holding a pyproject.toml with [tool.ociapp-build] (Python) or an ociapp.toml (Go)"}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func readTOML(path string) (map[string]any, error) {
	raw := map[string]any{}
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, &ConfigError{File: path, Problem: "invalid TOML", Fix: fmt.Sprintf("fix the syntax at line %d", perr.Position.Line), Err: errors.New(perr.Message)}
		}
		return nil, &ConfigError{File: path, Problem: "cannot read the file", Fix: "check that it exists and is readable", Err: err}
	}
	return raw, nil
}

// table reads a sub-table the way the original builder did.
func table(file string, v any, key, fix string) (map[string]any, error) {
	t, ok := v.(map[string]any)
	if !ok {
		return nil, &ConfigError{File: file, Key: key, Problem: "missing [" + key + "] configuration", Fix: fix}
	}
	return t, nil
}

func str(file string, v any, key, fix string) (string, error) {
	s, ok := v.(string)
	if !ok || s == "" {
		return "", &ConfigError{File: file, Key: key, Problem: key + " must be a non-empty string", Fix: fix}
	}
	return s, nil
}

func strList(file string, v any, key, fix string) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	items, ok := v.([]any)
	if ok {
		out := make([]string, 0, len(items))
		for _, it := range items {
			s, isStr := it.(string)
			if !isStr {
				ok = false
				break
			}
			out = append(out, s)
		}
		if ok {
			return out, nil
		}
	}
	return nil, &ConfigError{File: file, Key: key, Problem: key + " must be an array of strings", Fix: fix}
}

func rejectUnknown(file string, t map[string]any, prefix string, allowed []string, fix string) error {
	var unknown []string
	for k := range t {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	key := prefix + unknown[0]
	return &ConfigError{File: file, Key: key, Problem: "unsupported OCIApp build keys: " + strings.Join(unknown, ", "), Fix: fix}
}

func loadPyproject(root, file string) (*Project, error) {
	raw, err := readTOML(file)
	if err != nil {
		return nil, err
	}
	p := &Project{Root: root, ConfigFile: file, Language: Python}
	project, err := table(file, raw["project"], "project", `add a [project] table with name and version`)
	if err != nil {
		return nil, err
	}
	if p.Name, err = str(file, project["name"], "project.name", `set name = "my-app" under [project]`); err != nil {
		return nil, err
	}
	if p.Version, err = str(file, project["version"], "project.version",
		`set version = "0.1.0" under [project] (ociapp-build reads the version statically; a dynamic version is not supported)`); err != nil {
		return nil, err
	}
	if p.Dependencies, err = strList(file, project["dependencies"], "project.dependencies", `list requirements as strings, e.g. dependencies = ["pydantic>=2"]`); err != nil {
		return nil, err
	}
	p.BuildRequires = []string{"setuptools>=40.8.0"} // PEP 518's default backend
	if bs, ok := raw["build-system"].(map[string]any); ok && bs["requires"] != nil {
		if p.BuildRequires, err = strList(file, bs["requires"], "build-system.requires", `list requirements as strings, e.g. requires = ["setuptools>=64"]`); err != nil {
			return nil, err
		}
	}
	tool, err := table(file, raw["tool"], "tool", `add a [tool.ociapp-build] table with entrypoint = "pkg.module:app"`)
	if err != nil {
		return nil, err
	}
	cfg, err := table(file, tool["ociapp-build"], "tool.ociapp-build", `add a [tool.ociapp-build] table with entrypoint = "pkg.module:app"`)
	if err != nil {
		return nil, err
	}
	if err := p.readBuildKeys(file, cfg, "tool.ociapp-build."); err != nil {
		return nil, err
	}
	return p, nil
}

func loadOCIAppToml(root, file string) (*Project, error) {
	raw, err := readTOML(file)
	if err != nil {
		return nil, err
	}
	p := &Project{Root: root, ConfigFile: file, Language: Go}
	if p.Name, err = str(file, raw["name"], "name", `set name = "my-app" at the top of ociapp.toml`); err != nil {
		return nil, err
	}
	if p.Version, err = str(file, raw["version"], "version", `set version = "0.1.0" at the top of ociapp.toml`); err != nil {
		return nil, err
	}
	build := map[string]any{}
	for k, v := range raw {
		if k != "name" && k != "version" {
			build[k] = v
		}
	}
	if err := p.readBuildKeys(file, build, ""); err != nil {
		return nil, err
	}
	if p.Mode == ModeManaged && findGoMod(root) == "" {
		return nil, &ConfigError{File: file, Key: "mode", Problem: "a managed build from ociapp.toml compiles a Go program, but there is no go.mod in " + root + " or above",
			Fix: `add a go.mod (go mod init), or set mode = "custom" and containerfile = "Containerfile"`}
	}
	return p, nil
}

// readBuildKeys reads the keys [tool.ociapp-build] and ociapp.toml share.
func (p *Project) readBuildKeys(file string, t map[string]any, prefix string) error {
	mode := ModeManaged
	if v, ok := t["mode"]; ok {
		s, _ := v.(string)
		mode = Mode(s)
	}
	switch mode {
	case ModeManaged:
		allowed := []string{"mode", "entrypoint", "base-image", "system-packages"}
		fix := "remove them; managed mode accepts mode, entrypoint, system-packages and base-image"
		if p.Language == Go {
			allowed = []string{"mode", "entrypoint", "base-image"}
			fix = "remove them; managed Go builds accept name, version, mode, entrypoint and base-image (system-packages needs a package manager: use mode = \"custom\" with a Containerfile)"
		}
		if err := rejectUnknown(file, t, prefix, allowed, fix); err != nil {
			return err
		}
		if err := p.readEntrypoint(file, t["entrypoint"], prefix+"entrypoint"); err != nil {
			return err
		}
		pkgs, err := strList(file, t["system-packages"], prefix+"system-packages", `write it as an array, e.g. system-packages = ["git", "curl"]`)
		if err != nil {
			return err
		}
		for _, pkg := range pkgs {
			if !debianPackage.MatchString(pkg) {
				return &ConfigError{File: file, Key: prefix + "system-packages", Problem: fmt.Sprintf("%ssystem-packages: %q is not a Debian package name", prefix, pkg),
					Fix: "list package names as apt-get install takes them, e.g. \"git\" or \"libpq5=15.8-0+deb12u1\""}
			}
		}
		p.SystemPackages = pkgs
		if v, ok := t["base-image"]; ok {
			if p.BaseImage, err = str(file, v, prefix+"base-image", `set it to an image, e.g. base-image = "python:3.13-slim", or remove it for the default`); err != nil {
				return err
			}
			if !imageRef.MatchString(p.BaseImage) && (p.Language != Go || !isImageFile(p.Root, p.BaseImage)) {
				return &ConfigError{File: file, Key: prefix + "base-image", Problem: fmt.Sprintf("%sbase-image %q is not an image reference", prefix, p.BaseImage),
					Fix: `set it to an image such as "python:3.13-slim"`}
			}
		}
	case ModeCustom:
		if err := rejectUnknown(file, t, prefix, []string{"mode", "containerfile"}, "remove them; custom mode accepts mode and containerfile (the Containerfile chooses its own base image)"); err != nil {
			return err
		}
		cf, err := str(file, t["containerfile"], prefix+"containerfile", `set containerfile = "Containerfile" (a path relative to the project root)`)
		if err != nil {
			return err
		}
		abs := filepath.Clean(filepath.Join(p.Root, filepath.FromSlash(cf)))
		rel, err := filepath.Rel(p.Root, abs)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(cf) {
			return &ConfigError{File: file, Key: prefix + "containerfile", Problem: fmt.Sprintf("%scontainerfile %q is outside the project root", prefix, cf),
				Fix: "move the Containerfile into the project: the project root is the build context"}
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() {
			return &ConfigError{File: file, Key: prefix + "containerfile", Problem: "custom Containerfile does not exist: " + filepath.ToSlash(rel),
				Fix: "create it, or point " + prefix + "containerfile at the existing one (relative to the project root)", Err: ignoreNotExist(err)}
		}
		p.Containerfile = filepath.ToSlash(rel)
	default:
		return &ConfigError{File: file, Key: prefix + "mode", Problem: prefix + "mode must be 'managed' or 'custom'",
			Fix: fmt.Sprintf(`got %s; set mode = "managed" (the default) or mode = "custom"`, tomlValue(t["mode"]))}
	}
	p.Mode = mode
	return nil
}

func (p *Project) readEntrypoint(file string, v any, key string) error {
	switch p.Language {
	case Python:
		ep, err := str(file, v, key, `set it to the application's import path, e.g. entrypoint = "my_app.main:app"`)
		if err != nil {
			return err
		}
		if !pythonEntrypoint.MatchString(ep) {
			return &ConfigError{File: file, Key: key, Problem: fmt.Sprintf("%s %q must have the form 'pkg.module:attribute'", key, ep),
				Fix: `name the module and the Application instance in it, e.g. entrypoint = "my_app.main:app"`}
		}
		p.Entrypoint = ep
	case Go:
		ep, err := str(file, v, key, `set it to the main package, relative to the project root, e.g. entrypoint = "." or "./cmd/my-app"`)
		if err != nil {
			return err
		}
		clean := filepath.ToSlash(filepath.Clean(ep))
		if filepath.IsAbs(ep) || clean == ".." || strings.HasPrefix(clean, "../") {
			return &ConfigError{File: file, Key: key, Problem: fmt.Sprintf("%s %q is outside the project root", key, ep),
				Fix: `name a package inside the project, e.g. entrypoint = "./cmd/my-app"`}
		}
		if st, err := os.Stat(filepath.Join(p.Root, filepath.FromSlash(clean))); err != nil || !st.IsDir() {
			return &ConfigError{File: file, Key: key, Problem: fmt.Sprintf("%s %q is not a directory of the project", key, ep),
				Fix: `point it at the directory of the main package, e.g. entrypoint = "."`, Err: ignoreNotExist(err)}
		}
		if clean != "." {
			clean = "./" + clean
		}
		p.Entrypoint = clean
	}
	return nil
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func tomlValue(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%v", v)
}

// findGoMod returns the go.mod governing dir, or "".
func findGoMod(dir string) string {
	for {
		if p := filepath.Join(dir, "go.mod"); fileExists(p) {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// isImageFile reports whether a base-image value names an image archive
// file (relative to the project root) rather than an engine image.
func isImageFile(root, v string) bool {
	p := v
	if !filepath.IsAbs(p) {
		p = filepath.Join(root, p)
	}
	return fileExists(p)
}
