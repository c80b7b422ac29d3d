package artifact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Annotation keys an artifact carries. The OCI keys sit on the image
// manifest and, for the names, on the index entry; the dev.ociapp keys sit on
// the image manifest, so they are part of the artifact's digest.
const (
	AnnotationTitle          = "org.opencontainers.image.title"
	AnnotationVersion        = "org.opencontainers.image.version"
	AnnotationRefName        = "org.opencontainers.image.ref.name"
	AnnotationContainerdName = "io.containerd.image.name"
	AnnotationProtocol       = "dev.ociapp.protocol"
	AnnotationEntrypoint     = "dev.ociapp.entrypoint"
	AnnotationRequestSchema  = "dev.ociapp.request-schema"
	AnnotationResponseSchema = "dev.ociapp.response-schema"
	AnnotationCapabilities   = "dev.ociapp.capabilities"
)

// ProtocolVersion is the wire protocol version artifacts declare by default.
// Artifacts without a dev.ociapp.protocol annotation (those of the original
// builder) speak it too.
const ProtocolVersion = "1"

// RefDomain is the registry part of the image names ociapp-build gives its
// images. It is not a registry anyone can push to or pull from, so a name
// can never be confused with an image on Docker Hub.
const RefDomain = "ociapp.local"

// Metadata describes the application an artifact holds.
type Metadata struct {
	// Name and Version are the project's name and version.
	Name    string
	Version string
	// Ref is the image reference engines know the image by after loading,
	// in familiar form (e.g. "ociapp.local/echo-app:0.1.0"). Write fills it
	// with DefaultRef(Name, Version) when empty.
	Ref string
	// Entrypoint is the application entry point: "module:attr" for Python,
	// the main package for Go.
	Entrypoint string
	// Protocol is the wire protocol version; Write uses ProtocolVersion when
	// empty.
	Protocol string
	// RequestSchema and ResponseSchema are JSON Schemas of the request and
	// response, or nil when the builder could not derive them.
	RequestSchema  json.RawMessage
	ResponseSchema json.RawMessage
	// Capabilities lists the protocol extensions the application supports.
	Capabilities []string
}

var (
	refNameInvalid = regexp.MustCompile(`[^a-z0-9]+`)
	refTagInvalid  = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)
)

// DefaultRef returns the image reference for a project: under RefDomain, the
// name lowercased with every run of other characters than letters and digits
// replaced by "-", and the version with characters a tag cannot hold
// replaced by "-". DefaultRef("Echo_App", "1.0+local") is
// "ociapp.local/echo-app:1.0-local".
func DefaultRef(name, version string) string {
	repo := strings.Trim(refNameInvalid.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if repo == "" {
		repo = "app"
	}
	tag := refTagInvalid.ReplaceAllString(version, "-")
	tag = strings.TrimLeft(tag, ".-")
	if tag == "" {
		tag = "latest"
	}
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return RefDomain + "/" + repo + ":" + tag
}

// validate checks what Write needs and fills defaults.
func (m Metadata) normalized() (Metadata, error) {
	if m.Name == "" {
		return m, errors.New("metadata: Name is empty")
	}
	if m.Version == "" {
		return m, errors.New("metadata: Version is empty")
	}
	if m.Ref == "" {
		m.Ref = DefaultRef(m.Name, m.Version)
	}
	if m.Protocol == "" {
		m.Protocol = ProtocolVersion
	}
	for _, s := range []struct {
		name string
		v    *json.RawMessage
	}{{"RequestSchema", &m.RequestSchema}, {"ResponseSchema", &m.ResponseSchema}} {
		if len(*s.v) == 0 {
			*s.v = nil
			continue
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, *s.v); err != nil {
			return m, fmt.Errorf("metadata: %s is not JSON: %w", s.name, err)
		}
		*s.v = buf.Bytes()
	}
	for _, c := range m.Capabilities {
		if c == "" || strings.ContainsAny(c, ", \t\n") {
			return m, fmt.Errorf("metadata: capability %q is empty or holds a comma or space", c)
		}
	}
	if err := m.checkLengths(); err != nil {
		return m, fmt.Errorf("metadata: %w", err)
	}
	return m, nil
}

// manifestAnnotations are the annotations Write puts on the image manifest.
func (m Metadata) manifestAnnotations() map[string]string {
	a := map[string]string{
		AnnotationTitle:        m.Name,
		AnnotationVersion:      m.Version,
		AnnotationProtocol:     m.Protocol,
		AnnotationCapabilities: strings.Join(m.Capabilities, ","),
	}
	if m.Entrypoint != "" {
		a[AnnotationEntrypoint] = m.Entrypoint
	}
	if m.RequestSchema != nil {
		a[AnnotationRequestSchema] = string(m.RequestSchema)
	}
	if m.ResponseSchema != nil {
		a[AnnotationResponseSchema] = string(m.ResponseSchema)
	}
	return a
}

// indexAnnotations are the annotations Write puts on the index entry: the
// image's name, which is where containerd (and Docker's containerd image
// store) takes tags from on load.
func (m Metadata) indexAnnotations() map[string]string {
	return map[string]string{
		AnnotationRefName:        m.Ref,
		AnnotationContainerdName: qualifiedRef(m.Ref),
		AnnotationTitle:          m.Name,
		AnnotationVersion:        m.Version,
	}
}

// qualifiedRef turns a familiar reference into the fully qualified form
// containerd stores ("echo:1" is "docker.io/library/echo:1").
func qualifiedRef(ref string) string {
	first, rest, found := strings.Cut(ref, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return ref
	}
	if !found {
		return "docker.io/library/" + ref
	}
	return "docker.io/" + first + "/" + rest
}

// familiarRef is the inverse of qualifiedRef.
func familiarRef(ref string) string {
	if rest, ok := strings.CutPrefix(ref, "docker.io/"); ok {
		if name, ok := strings.CutPrefix(rest, "library/"); ok && !strings.Contains(name, "/") {
			return name
		}
		return rest
	}
	return ref
}

// splitRef splits a familiar reference into its repository's last path
// component and its tag ("" when it has none).
func splitRef(ref string) (name, tag string) {
	if at := strings.IndexByte(ref, '@'); at >= 0 {
		ref = ref[:at]
	}
	repo := ref
	if colon := strings.LastIndexByte(ref, ':'); colon > strings.LastIndexByte(ref, '/') {
		repo, tag = ref[:colon], ref[colon+1:]
	}
	return repo[strings.LastIndexByte(repo, '/')+1:], tag
}

// maxMetadataText bounds each name, version, reference, entry point,
// protocol and capability an artifact declares (image references are at
// most 255 bytes of name and 128 of tag); callers print and log them.
const maxMetadataText = 512

// maxCapabilities bounds the capabilities an artifact declares.
const maxCapabilities = 64

// metadataFrom reads metadata from annotations, falling back for artifacts
// that carry none (the original builder's, plain docker save archives) on
// the image reference and the image command.
func metadataFrom(ann map[string]string, ref string, cmd []string) (Metadata, error) {
	m := Metadata{
		Name:       ann[AnnotationTitle],
		Version:    ann[AnnotationVersion],
		Ref:        ref,
		Entrypoint: ann[AnnotationEntrypoint],
		Protocol:   ann[AnnotationProtocol],
	}
	if name, tag := splitRef(ref); ref != "" {
		if m.Name == "" {
			m.Name = name
		}
		if m.Version == "" {
			m.Version = tag
		}
	}
	if m.Entrypoint == "" {
		m.Entrypoint = entrypointFromCommand(cmd)
	}
	if m.Protocol == "" {
		m.Protocol = ProtocolVersion
	}
	for _, s := range []struct {
		key string
		v   *json.RawMessage
	}{{AnnotationRequestSchema, &m.RequestSchema}, {AnnotationResponseSchema, &m.ResponseSchema}} {
		text, ok := ann[s.key]
		if !ok || text == "" {
			continue
		}
		if !json.Valid([]byte(text)) {
			return m, fmt.Errorf("annotation %s is not valid JSON", s.key)
		}
		*s.v = json.RawMessage(text)
	}
	for c := range strings.SplitSeq(ann[AnnotationCapabilities], ",") {
		if c = strings.TrimSpace(c); c != "" {
			m.Capabilities = append(m.Capabilities, c)
		}
	}
	return m, m.checkLengths()
}

// checkLengths bounds the text fields, which Write and Open both check.
func (m Metadata) checkLengths() error {
	if len(m.Capabilities) > maxCapabilities {
		return fmt.Errorf("%d capabilities, more than %d", len(m.Capabilities), maxCapabilities)
	}
	for _, f := range []struct{ what, v string }{
		{"name", m.Name}, {"version", m.Version}, {"image reference", m.Ref},
		{"entry point", m.Entrypoint}, {"protocol", m.Protocol},
	} {
		if len(f.v) > maxMetadataText {
			return fmt.Errorf("the %s is %d bytes, more than %d", f.what, len(f.v), maxMetadataText)
		}
	}
	for _, c := range m.Capabilities {
		if len(c) > maxMetadataText {
			return fmt.Errorf("a capability is %d bytes, more than %d", len(c), maxMetadataText)
		}
	}
	return nil
}

// entrypointFromCommand finds X in an "ociapp serve --app X" command, the
// command the original builder gives its images.
func entrypointFromCommand(cmd []string) string {
	for i := 0; i+1 < len(cmd); i++ {
		if cmd[i] == "--app" {
			return cmd[i+1]
		}
		if v, ok := strings.CutPrefix(cmd[i], "--app="); ok {
			return v
		}
	}
	return ""
}
