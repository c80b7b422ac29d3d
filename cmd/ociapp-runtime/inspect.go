package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ociapp/ociapp/artifact"
	"github.com/ociapp/ociapp/internal/bytesize"
)

const inspectUsage = `usage: ociapp-runtime inspect [--json] ARTIFACT

Verifies ARTIFACT (every blob against its digest) and shows what it holds:
name, version, digest, size, layers, entrypoint, protocol and the request and
response JSON Schemas. Needs no container engine.

Exit status: 0 success, 2 bad usage, 5 the artifact is missing or corrupt,
7 interrupted (SIGINT or SIGTERM).

flags:
`

// inspectJSON is the --json output; field names are stable for scripts.
type inspectJSON struct {
	Path           string          `json:"path"`
	Format         string          `json:"format"`
	Name           string          `json:"name"`
	Version        string          `json:"version"`
	Ref            string          `json:"ref"`
	Digest         string          `json:"digest"`
	ConfigDigest   string          `json:"config_digest"`
	Size           int64           `json:"size"`
	Platform       string          `json:"platform"`
	User           string          `json:"user"`
	Command        []string        `json:"command"`
	Entrypoint     string          `json:"entrypoint"`
	Protocol       string          `json:"protocol"`
	Capabilities   []string        `json:"capabilities"`
	DockerLoadable bool            `json:"docker_loadable"`
	Layers         []inspectLayer  `json:"layers"`
	RequestSchema  json.RawMessage `json:"request_schema"`
	ResponseSchema json.RawMessage `json:"response_schema"`
}

type inspectLayer struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	DiffID    string `json:"diff_id"`
	MediaType string `json:"media_type"`
}

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, inspectUsage)
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	// Flags may follow the artifact: "inspect x.ociapp --json".
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return exitUsage
	}
	a, err := artifact.Open(ctx, positional[0])
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "ociapp-runtime inspect: interrupted")
		return exitOther
	}
	if err != nil {
		fmt.Fprintln(stderr, "ociapp-runtime inspect:", err)
		return exitUnavailable
	}
	info := describe(a)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(info); err != nil {
			fmt.Fprintln(stderr, "ociapp-runtime inspect:", err)
			return exitOther
		}
		return exitOK
	}
	printInspect(stdout, info)
	return exitOK
}

func describe(a *artifact.Artifact) inspectJSON {
	md := a.Metadata
	info := inspectJSON{
		Path:           a.Path,
		Format:         a.Format.String(),
		Name:           md.Name,
		Version:        md.Version,
		Ref:            md.Ref,
		Digest:         a.Digest.String(),
		ConfigDigest:   a.ConfigDigest.String(),
		Size:           a.Size,
		Platform:       a.Config.OS + "/" + a.Config.Architecture,
		User:           a.Config.Config.User,
		Command:        append(append([]string{}, a.Config.Config.Entrypoint...), a.Config.Config.Cmd...),
		Entrypoint:     md.Entrypoint,
		Protocol:       md.Protocol,
		Capabilities:   append([]string{}, md.Capabilities...),
		DockerLoadable: a.DockerLoadable,
		Layers:         []inspectLayer{},
		RequestSchema:  md.RequestSchema,
		ResponseSchema: md.ResponseSchema,
	}
	if a.Config.Variant != "" {
		info.Platform += "/" + a.Config.Variant
	}
	for _, l := range a.Layers {
		info.Layers = append(info.Layers, inspectLayer{Digest: l.Digest.String(), Size: l.Size, DiffID: l.DiffID.String(), MediaType: string(l.MediaType)})
	}
	return info
}

func printInspect(w io.Writer, info inspectJSON) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	orNone := func(s string) string {
		if s == "" {
			return "(none)"
		}
		return s
	}
	user := info.User
	if user == "" {
		user = "(image default: root)"
	}
	rows := [][2]string{
		{"name", orNone(info.Name)},
		{"version", orNone(info.Version)},
		{"ref", orNone(info.Ref)},
		{"file", fmt.Sprintf("%s (%s, %s)", info.Path, bytesize.Format(info.Size), info.Format)},
		{"digest", info.Digest},
		{"config digest", info.ConfigDigest + " (the image ID in Docker's classic store)"},
		{"platform", info.Platform},
		{"user", user},
		{"command", orNone(strings.Join(info.Command, " "))},
		{"entrypoint", orNone(info.Entrypoint)},
		{"protocol", info.Protocol},
		{"capabilities", orNone(strings.Join(info.Capabilities, ", "))},
		{"docker loadable", fmt.Sprint(info.DockerLoadable)},
		{"layers", fmt.Sprint(len(info.Layers))},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	tw.Flush()
	for _, l := range info.Layers {
		fmt.Fprintf(w, "  %s  %9s  %s\n", l.Digest, bytesize.Format(l.Size), l.MediaType)
	}
	for _, s := range []struct {
		name   string
		schema json.RawMessage
	}{{"request schema", info.RequestSchema}, {"response schema", info.ResponseSchema}} {
		if len(s.schema) == 0 {
			fmt.Fprintf(w, "%s: (not recorded)\n", s.name)
			continue
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, s.schema, "  ", "  "); err != nil {
			buf.Reset()
			buf.Write(s.schema)
		}
		fmt.Fprintf(w, "%s:\n  %s\n", s.name, buf.String())
	}
}
