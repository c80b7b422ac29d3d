package build

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"text/template"

	"github.com/BurntSushi/toml"

	"github.com/ociapp/ociapp/python"
)

//go:embed python.Containerfile.tmpl
var pythonContainerfileText string

var pythonContainerfile = template.Must(template.New("Containerfile").
	Funcs(template.FuncMap{"join": strings.Join}).
	Parse(pythonContainerfileText))

// schemaPath is where a managed Python image keeps the app's JSON Schemas;
// the builder reads it back out of the image's layers.
const schemaPath = "/opt/ociapp/schema.json"

// containerfileData fills the managed Python Containerfile.
type containerfileData struct {
	Name, Version string
	BaseImage     string
	Packages      []string
	Dependencies  bool
	Entrypoint    string
	SchemaPath    string
	UID           int
	User          string
	Cmd           string
}

// RenderContainerfile returns the Containerfile of a managed Python build.
func RenderContainerfile(p *Project) (string, error) {
	baseImage := p.BaseImage
	if baseImage == "" {
		baseImage = DefaultPythonBaseImage
	}
	pkgs := []string{"tini"}
	for _, pkg := range p.SystemPackages {
		if !slices.Contains(pkgs, pkg) {
			pkgs = append(pkgs, pkg)
		}
	}
	cmd, err := json.Marshal([]string{"ociapp", "serve", "--app", p.Entrypoint})
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	err = pythonContainerfile.Execute(&buf, containerfileData{
		Name:         p.Name,
		Version:      p.Version,
		BaseImage:    baseImage,
		Packages:     pkgs,
		Dependencies: len(p.Dependencies) > 0,
		Entrypoint:   p.Entrypoint,
		SchemaPath:   schemaPath,
		UID:          appUID,
		User:         appUser,
		Cmd:          strings.ReplaceAll(string(cmd), `","`, `", "`),
	})
	return buf.String(), err
}

// pythonContext assembles the build context of a managed Python build:
// the Containerfile, the requirement files, the SDK and the app.
func pythonContext(p *Project) (*contextSet, error) {
	containerfile, err := RenderContainerfile(p)
	if err != nil {
		return nil, fmt.Errorf("rendering the Containerfile: %w", err)
	}
	sdk := python.SDK()
	sdkBuild, err := sdkBuildRequires(sdk)
	if err != nil {
		return nil, err
	}
	c := newContext()
	c.addData("Containerfile", []byte(containerfile))
	c.addData("ociapp/build-requirements.txt", requirements(append(sdkBuild, p.BuildRequires...)))
	if len(p.Dependencies) > 0 {
		c.addData("ociapp/requirements.txt", requirements(p.Dependencies))
	}
	if err := c.addFS("ociapp/sdk", sdk); err != nil {
		return nil, fmt.Errorf("adding the Python SDK: %w", err)
	}
	ignore, err := readIgnoreFile(p.Root)
	if err != nil {
		return nil, err
	}
	if err := c.addDir("app", p.Root, append(slices.Clone(defaultExcludes), ignore...)); err != nil {
		return nil, fmt.Errorf("adding the project: %w", err)
	}
	return c, nil
}

// requirements is a pip requirements file, one requirement per line, exact
// duplicates dropped.
func requirements(reqs []string) []byte {
	var b strings.Builder
	var seen []string
	for _, r := range reqs {
		r = strings.TrimSpace(r)
		if r == "" || slices.Contains(seen, r) {
			continue
		}
		seen = append(seen, r)
		b.WriteString(r + "\n")
	}
	return []byte(b.String())
}

// sdkBuildRequires reads the SDK's [build-system].requires.
func sdkBuildRequires(sdk fs.FS) ([]string, error) {
	raw, err := fs.ReadFile(sdk, "pyproject.toml")
	if err != nil {
		return nil, fmt.Errorf("reading the embedded SDK: %w", err)
	}
	var doc struct {
		BuildSystem struct {
			Requires []string `toml:"requires"`
		} `toml:"build-system"`
	}
	if err := toml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("reading the embedded SDK's pyproject.toml: %w", err)
	}
	return doc.BuildSystem.Requires, nil
}

// python builds a managed Python project through the engine.
func (b *builder) python(ctx context.Context, out string) error {
	b.phase("preparing the build context")
	c, err := pythonContext(b.p)
	if err != nil {
		return err
	}
	ctxFile, err := c.writeTemp()
	if err != nil {
		return fmt.Errorf("writing the build context: %w", err)
	}
	defer os.Remove(ctxFile.Name())
	defer ctxFile.Close()

	img, cleanup, err := b.engineBuild(ctx, ctxFile, "Containerfile")
	if err != nil {
		return err
	}
	defer cleanup()
	b.phase("reading the app's JSON Schemas")
	md := b.metadata()
	raw, err := findFile(img, schemaPath)
	if err != nil {
		return fmt.Errorf("reading %s from the image: %w", schemaPath, err)
	}
	desc, err := parseSchemas(raw)
	if err != nil {
		return fmt.Errorf("reading %s from the image: %w", schemaPath, err)
	}
	desc.apply(&md)
	return b.write(ctx, out, img, md)
}
