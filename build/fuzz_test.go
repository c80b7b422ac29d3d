package build

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadProject feeds arbitrary pyproject.toml and ociapp.toml files to
// the config loader: it must never panic, and every failure is a
// *ConfigError naming the file.
func FuzzLoadProject(f *testing.F) {
	f.Add([]byte(validPyproject), false)
	f.Add([]byte("[project]\nname = \"a\"\nversion = \"1\"\n[tool.ociapp-build]\nmode = \"custom\"\ncontainerfile = \"Containerfile\"\n"), false)
	f.Add([]byte("name = \"a\"\nversion = \"1\"\nentrypoint = \".\"\nbase-image = \"x.tar\"\n"), true)
	f.Add([]byte("[tool.ociapp-build]\nsystem-packages = [1, \"a\"]\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, goProject bool) {
		root := t.TempDir()
		name := PyprojectFile
		if goProject {
			name = OCIAppFile
			if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(root, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := LoadProject(root)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.File == "" {
				t.Fatalf("error %v (%T) is not a *ConfigError naming a file", err, err)
			}
			return
		}
		if p.Name == "" || p.Version == "" || (p.Mode != ModeManaged && p.Mode != ModeCustom) {
			t.Fatalf("accepted an incomplete project %+v", p)
		}
		if p.Mode == ModeManaged && p.Entrypoint == "" {
			t.Fatalf("managed project without entrypoint: %+v", p)
		}
	})
}

// FuzzParseSchemas feeds arbitrary schema command output to the parser.
func FuzzParseSchemas(f *testing.F) {
	f.Add([]byte(`{"request": {"type": "object"}, "response": {"type": "object"}}`))
	f.Add([]byte(`{"request": null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"request": {}, "response": {}, "capabilities": ["deadline"]}`))
	f.Add([]byte(`{"request": {}, "response": {}, "capabilities": ["cancel", "deadline", "stream"], "stream": true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		desc, err := parseSchemas(data)
		if err == nil && (len(desc.Request) == 0 || len(desc.Response) == 0) {
			t.Fatalf("accepted %q without both schemas", data)
		}
	})
}
