package build

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeProject creates a project directory holding files (name -> content).
func writeProject(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const validPyproject = `
[project]
name = "demo-app"
version = "1.2.3"
dependencies = ["pydantic>=2", "ociapp"]

[build-system]
requires = ["setuptools>=64"]

[tool.ociapp-build]
entrypoint = "demo.main:app"
system-packages = ["git", "curl"]
`

func TestLoadProjectValid(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  Project
	}{
		{"managed python", map[string]string{"pyproject.toml": validPyproject}, Project{
			Language: Python, Name: "demo-app", Version: "1.2.3", Mode: ModeManaged,
			Entrypoint: "demo.main:app", SystemPackages: []string{"git", "curl"},
			Dependencies: []string{"pydantic>=2", "ociapp"}, BuildRequires: []string{"setuptools>=64"},
		}},
		{"managed python defaults", map[string]string{"pyproject.toml": `
[project]
name = "demo"
version = "1"
[tool.ociapp-build]
mode = "managed"
entrypoint = "demo:app"
base-image = "ociapp-local/python:3.13"
`}, Project{
			Language: Python, Name: "demo", Version: "1", Mode: ModeManaged, Entrypoint: "demo:app",
			BaseImage: "ociapp-local/python:3.13", BuildRequires: []string{"setuptools>=40.8.0"},
		}},
		{"custom python", map[string]string{"Containerfile": "FROM scratch\n", "pyproject.toml": `
[project]
name = "demo-app"
version = "1.2.3"
[tool.ociapp-build]
mode = "custom"
containerfile = "Containerfile"
`}, Project{
			Language: Python, Name: "demo-app", Version: "1.2.3", Mode: ModeCustom, Containerfile: "Containerfile",
			BuildRequires: []string{"setuptools>=40.8.0"},
		}},
		{"managed go", map[string]string{"go.mod": "module x\n", "cmd/app/main.go": "package main\n", "ociapp.toml": `
name = "demo-go"
version = "0.1.0"
entrypoint = "cmd/app"
`}, Project{Language: Go, Name: "demo-go", Version: "0.1.0", Mode: ModeManaged, Entrypoint: "./cmd/app"}},
		{"custom go", map[string]string{"build/Containerfile": "FROM scratch\n", "ociapp.toml": `
name = "demo-go"
version = "0.1.0"
mode = "custom"
containerfile = "build/Containerfile"
`}, Project{Language: Go, Name: "demo-go", Version: "0.1.0", Mode: ModeCustom, Containerfile: "build/Containerfile"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := writeProject(t, c.files)
			p, err := LoadProject(root)
			if err != nil {
				t.Fatal(err)
			}
			c.want.Root = root
			c.want.ConfigFile = p.ConfigFile
			if !reflect.DeepEqual(*p, c.want) {
				t.Errorf("got  %+v\nwant %+v", *p, c.want)
			}
			if p.ArtifactName() != c.want.Name+"-"+c.want.Version+".ociapp" {
				t.Errorf("artifact name %s", p.ArtifactName())
			}
		})
	}
}

func TestLoadProjectErrors(t *testing.T) {
	const project = "[project]\nname = \"demo-app\"\nversion = \"1.2.3\"\n"
	gomod := map[string]string{"go.mod": "module x\n", "main.go": "package main\n"}
	with := func(base map[string]string, extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	cases := []struct {
		name  string
		files map[string]string
		file  string // config file named in the error
		key   string
		msg   string // the original builder's text, or ours where it had none
	}{
		{"no config file", map[string]string{}, "pyproject.toml", "", "missing pyproject.toml at"},
		{"invalid toml", map[string]string{"pyproject.toml": "[project\n"}, "pyproject.toml", "", "invalid TOML"},
		{"no project table", map[string]string{"pyproject.toml": "[tool.ociapp-build]\nentrypoint = \"a:b\"\n"}, "pyproject.toml", "project", "missing [project] configuration"},
		{"no name", map[string]string{"pyproject.toml": "[project]\nversion = \"1\"\n[tool.ociapp-build]\nentrypoint = \"a:b\"\n"}, "pyproject.toml", "project.name", "project.name must be a non-empty string"},
		{"empty version", map[string]string{"pyproject.toml": "[project]\nname = \"a\"\nversion = \"\"\n[tool.ociapp-build]\nentrypoint = \"a:b\"\n"}, "pyproject.toml", "project.version", "project.version must be a non-empty string"},
		{"dependencies not strings", map[string]string{"pyproject.toml": project + "dependencies = [1]\n[tool.ociapp-build]\nentrypoint = \"a:b\"\n"}, "pyproject.toml", "project.dependencies", "must be an array of strings"},
		{"build requires not a list", map[string]string{"pyproject.toml": project + "[build-system]\nrequires = \"setuptools\"\n[tool.ociapp-build]\nentrypoint = \"a:b\"\n"}, "pyproject.toml", "build-system.requires", "must be an array of strings"},
		{"no tool table", map[string]string{"pyproject.toml": project}, "pyproject.toml", "tool", "missing [tool] configuration"},
		{"no ociapp-build table", map[string]string{"pyproject.toml": project + "[tool.ruff]\nline-length = 88\n"}, "pyproject.toml", "tool.ociapp-build", "missing [tool.ociapp-build] configuration"},
		{"managed missing entrypoint", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\n"}, "pyproject.toml", "tool.ociapp-build.entrypoint", "tool.ociapp-build.entrypoint must be a non-empty string"},
		{"managed bad entrypoint", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nentrypoint = \"demo.main\"\n"}, "pyproject.toml", "tool.ociapp-build.entrypoint", "must have the form 'pkg.module:attribute'"},
		{"unknown mode", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nmode = \"docker\"\n"}, "pyproject.toml", "tool.ociapp-build.mode", "tool.ociapp-build.mode must be 'managed' or 'custom'"},
		{"mode not a string", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nmode = 1\n"}, "pyproject.toml", "tool.ociapp-build.mode", "tool.ociapp-build.mode must be 'managed' or 'custom'"},
		{"managed unknown key", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nentrypoint = \"a:b\"\nsystem_packages = [\"git\"]\nzzz = 1\n"}, "pyproject.toml", "tool.ociapp-build.system_packages", "unsupported OCIApp build keys: system_packages, zzz"},
		{"system packages not a list", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nentrypoint = \"a:b\"\nsystem-packages = \"git\"\n"}, "pyproject.toml", "tool.ociapp-build.system-packages", "tool.ociapp-build.system-packages must be an array of strings"},
		{"system packages not strings", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nentrypoint = \"a:b\"\nsystem-packages = [\"git\", 2]\n"}, "pyproject.toml", "tool.ociapp-build.system-packages", "tool.ociapp-build.system-packages must be an array of strings"},
		{"system package with shell", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nentrypoint = \"a:b\"\nsystem-packages = [\"git; rm -rf /\"]\n"}, "pyproject.toml", "tool.ociapp-build.system-packages", "is not a Debian package name"},
		{"base image empty", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nentrypoint = \"a:b\"\nbase-image = \"\"\n"}, "pyproject.toml", "tool.ociapp-build.base-image", "tool.ociapp-build.base-image must be a non-empty string"},
		{"base image invalid", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nentrypoint = \"a:b\"\nbase-image = \"python 3\"\n"}, "pyproject.toml", "tool.ociapp-build.base-image", "is not an image reference"},
		{"custom extra key", map[string]string{"Containerfile": "FROM scratch\n", "pyproject.toml": project + "[tool.ociapp-build]\nmode = \"custom\"\nentrypoint = \"demo.main:app\"\ncontainerfile = \"Containerfile\"\n"}, "pyproject.toml", "tool.ociapp-build.entrypoint", "unsupported OCIApp build keys: entrypoint"},
		{"custom missing containerfile key", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nmode = \"custom\"\n"}, "pyproject.toml", "tool.ociapp-build.containerfile", "tool.ociapp-build.containerfile must be a non-empty string"},
		{"custom missing containerfile", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nmode = \"custom\"\ncontainerfile = \"Missingfile\"\n"}, "pyproject.toml", "tool.ociapp-build.containerfile", "custom Containerfile does not exist: Missingfile"},
		{"custom containerfile outside", map[string]string{"pyproject.toml": project + "[tool.ociapp-build]\nmode = \"custom\"\ncontainerfile = \"../Containerfile\"\n"}, "pyproject.toml", "tool.ociapp-build.containerfile", "is outside the project root"},
		{"go no name", with(gomod, map[string]string{"ociapp.toml": "version = \"1\"\nentrypoint = \".\"\n"}), "ociapp.toml", "name", "name must be a non-empty string"},
		{"go no version", with(gomod, map[string]string{"ociapp.toml": "name = \"a\"\nentrypoint = \".\"\n"}), "ociapp.toml", "version", "version must be a non-empty string"},
		{"go no entrypoint", with(gomod, map[string]string{"ociapp.toml": "name = \"a\"\nversion = \"1\"\n"}), "ociapp.toml", "entrypoint", "entrypoint must be a non-empty string"},
		{"go entrypoint missing", with(gomod, map[string]string{"ociapp.toml": "name = \"a\"\nversion = \"1\"\nentrypoint = \"./cmd/nope\"\n"}), "ociapp.toml", "entrypoint", "is not a directory of the project"},
		{"go entrypoint outside", with(gomod, map[string]string{"ociapp.toml": "name = \"a\"\nversion = \"1\"\nentrypoint = \"../x\"\n"}), "ociapp.toml", "entrypoint", "is outside the project root"},
		{"go system packages", with(gomod, map[string]string{"ociapp.toml": "name = \"a\"\nversion = \"1\"\nentrypoint = \".\"\nsystem-packages = [\"git\"]\n"}), "ociapp.toml", "system-packages", "unsupported OCIApp build keys: system-packages"},
		{"go no go.mod", map[string]string{"ociapp.toml": "name = \"a\"\nversion = \"1\"\nentrypoint = \".\"\n"}, "ociapp.toml", "mode", "no go.mod"},
		{"go custom missing containerfile", with(gomod, map[string]string{"ociapp.toml": "name = \"a\"\nversion = \"1\"\nmode = \"custom\"\ncontainerfile = \"Containerfile\"\n"}), "ociapp.toml", "containerfile", "custom Containerfile does not exist: Containerfile"},
		{"both config files", with(gomod, map[string]string{"ociapp.toml": "name = \"a\"\nversion = \"1\"\nentrypoint = \".\"\n", "pyproject.toml": validPyproject}), "ociapp.toml", "", "both ociapp.toml and [tool.ociapp-build] in pyproject.toml"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := writeProject(t, c.files)
			_, err := LoadProject(root)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *ConfigError", err, err)
			}
			if ce.File != filepath.Join(root, c.file) {
				t.Errorf("file %s, want %s", ce.File, filepath.Join(root, c.file))
			}
			if ce.Key != c.key {
				t.Errorf("key %q, want %q", ce.Key, c.key)
			}
			if ce.Fix == "" {
				t.Error("no fix")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.msg) || !strings.HasPrefix(msg, ce.File+": ") || !strings.Contains(msg, ce.Fix) {
				t.Errorf("message %q: want the file, %q and the fix", msg, c.msg)
			}
		})
	}
}

func TestLoadProjectNotADirectory(t *testing.T) {
	_, err := LoadProject(filepath.Join(t.TempDir(), "nope"))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v", err)
	}
}

func TestNeedsEngine(t *testing.T) {
	root := writeProject(t, map[string]string{"base.tar": "x"})
	for _, c := range []struct {
		p    Project
		want bool
	}{
		{Project{Root: root, Language: Python, Mode: ModeManaged}, true},
		{Project{Root: root, Language: Go, Mode: ModeCustom}, true},
		{Project{Root: root, Language: Go, Mode: ModeManaged}, false},
		{Project{Root: root, Language: Go, Mode: ModeManaged, BaseImage: "base.tar"}, false},
		{Project{Root: root, Language: Go, Mode: ModeManaged, BaseImage: "debian:trixie"}, true},
	} {
		if got := c.p.NeedsEngine(); got != c.want {
			t.Errorf("%+v: NeedsEngine %v, want %v", c.p, got, c.want)
		}
	}
}
