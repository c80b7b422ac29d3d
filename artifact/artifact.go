// Package artifact reads, writes and verifies .ociapp files: OCI image
// layouts in one tar that also carry a docker-save manifest.json.
package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Format is the layout of an artifact file.
type Format int

const (
	// FormatOCIApp is an OCI image layout that also carries a docker-save
	// manifest.json over the same blobs: what Write produces (and what
	// docker save of Docker 25 and later produces).
	FormatOCIApp Format = iota + 1
	// FormatOCILayout is an OCI image layout alone, e.g. the output of
	// buildx --output type=oci, which the original builder used.
	FormatOCILayout
	// FormatDockerSave is a docker-save archive alone (manifest.json and
	// the legacy layout of Docker before 25).
	FormatDockerSave
)

func (f Format) String() string {
	switch f {
	case FormatOCIApp:
		return "oci-layout+docker-save"
	case FormatOCILayout:
		return "oci-layout"
	case FormatDockerSave:
		return "docker-save"
	}
	return fmt.Sprintf("format %d", int(f))
}

// Layer describes one layer of an artifact's image.
type Layer struct {
	// Digest and Size are those of the blob as stored in the file.
	Digest v1.Hash
	Size   int64
	// DiffID is the digest of the uncompressed layer.
	DiffID    v1.Hash
	MediaType types.MediaType
}

// Artifact is a verified artifact file. Open reads it; its fields describe
// the single image it holds.
type Artifact struct {
	// Path is the file the artifact was opened from.
	Path string
	// Format is the file's layout.
	Format Format
	// Digest is the digest of the image manifest: the artifact's identity,
	// and the image ID Docker's containerd image store gives it. For a
	// plain docker-save archive, which carries no manifest, it is the digest
	// of the manifest Image synthesizes (uncompressed layers).
	Digest v1.Hash
	// ConfigDigest is the digest of the image config: the image ID Docker's
	// classic image store gives the image.
	ConfigDigest v1.Hash
	// Size is the file's size in bytes.
	Size int64
	// Metadata describes the application.
	Metadata Metadata
	// Layers lists the image's layers, base first.
	Layers []Layer
	// Config is the image configuration (user, entrypoint, command, ...).
	Config v1.ConfigFile
	// DockerLoadable reports whether every Docker version can load the
	// file as it is: it has a manifest.json, and no layer is zstd.
	DockerLoadable bool

	mediaType   types.MediaType
	rawManifest []byte
	rawConfig   []byte
	blobs       map[v1.Hash]*entry
	fileDigest  v1.Hash
	limits      Limits

	// layersMu guards expanded, set once the layers are checked.
	layersMu sync.Mutex
	expanded map[v1.Hash]int64 // uncompressed size of each layer blob
}

// Open reads and verifies the artifact at path: every blob's content must
// match its digest, every layer must decompress to its diff ID, and the file
// must hold exactly one image (or one for linux on this machine's
// architecture). It accepts what Write produces, OCI layout tars from buildx
// (gzip or zstd layers, attestation manifests) and plain docker save
// archives. Reading is bounded by DefaultLimits, or the Limits given with
// WithLimits, and stops when ctx ends. Failures are *Error values, except
// that a cancelled read returns an error wrapping ctx.Err().
func Open(ctx context.Context, path string, opts ...OpenOption) (*Artifact, error) {
	var cfg openConfig
	for _, o := range opts {
		o(&cfg)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &Error{Path: path, Fault: FaultMissing, Err: err}
		}
		return nil, &Error{Path: path, Fault: FaultUnreadable, Err: err}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, &Error{Path: path, Fault: FaultUnreadable, Err: err}
	}
	if st.IsDir() {
		return nil, faultf(path, FaultNotTar, nil, "it is a directory")
	}
	return read(ctx, f, st.Size(), path, cfg)
}

// FileDigest is the sha256 of the whole artifact file, for WithVerifiedFile.
func (a *Artifact) FileDigest() v1.Hash { return a.fileDigest }

// read opens an artifact from any random-access source; Open passes a file.
func read(ctx context.Context, ra io.ReaderAt, size int64, path string, cfg openConfig) (*Artifact, error) {
	arc, err := scanTar(ctx, ra, size, path, cfg.limits.withDefaults(), cfg.verified)
	if err != nil {
		return nil, err
	}
	a := &Artifact{Path: path, Size: size, fileDigest: arc.file, limits: arc.limits}
	indexEntry, hasIndex := arc.lookup("index.json")
	dockerEntry, hasDocker := arc.lookup("manifest.json")
	var annotations map[string]string
	switch {
	case hasIndex:
		annotations, err = a.fromIndex(ctx, arc, indexEntry)
		if err != nil {
			return nil, err
		}
		a.Format = FormatOCILayout
		if hasDocker {
			if err := a.checkDockerView(arc, dockerEntry); err != nil {
				return nil, err
			}
			a.Format = FormatOCIApp
		}
	case hasDocker:
		annotations, err = a.fromDockerSave(ctx, arc, dockerEntry)
		if err != nil {
			return nil, err
		}
		a.Format = FormatDockerSave
	default:
		return nil, faultf(path, FaultNoImage, nil, "")
	}
	if !cfg.deferLayers {
		if err := a.checkLayers(ctx, arc); err != nil {
			return nil, err
		}
	}
	cmd := append(slices.Clone(a.Config.Config.Entrypoint), a.Config.Config.Cmd...)
	a.Metadata, err = metadataFrom(annotations, a.Metadata.Ref, cmd)
	if err != nil {
		return nil, faultf(path, FaultMalformed, err, "reading metadata")
	}
	return a, nil
}

// candidate is an image manifest an index lists.
type candidate struct {
	desc        v1.Descriptor
	annotations map[string]string // of the index.json entry it was reached from
}

// fromIndex reads the image an OCI layout holds and returns the annotations
// of its index entry merged with those of its manifest.
func (a *Artifact) fromIndex(ctx context.Context, arc *archive, indexEntry *entry) (map[string]string, error) {
	raw, err := arc.read(indexEntry)
	if err != nil {
		return nil, err
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(raw, &index); err != nil {
		return nil, faultf(a.Path, FaultMalformed, err, "parsing index.json")
	}
	w := &walker{ctx: ctx, arc: arc, walked: map[v1.Hash]bool{}, sniffed: map[v1.Hash]types.MediaType{}}
	if err := w.walk(index.Manifests, nil, 0); err != nil {
		return nil, err
	}
	if len(w.cands) == 0 {
		if len(w.unsupported) > 0 {
			return nil, faultf(a.Path, FaultUnsupportedMediaType, nil, "index.json lists no image, only %s", list(w.unsupported))
		}
		return nil, faultf(a.Path, FaultNoImage, nil, "index.json lists no image")
	}
	chosen, err := a.choose(ctx, arc, w.cands)
	if err != nil {
		return nil, err
	}
	m, err := a.loadManifest(arc, chosen.desc)
	if err != nil {
		return nil, err
	}
	ann := map[string]string{}
	for k, v := range m.Annotations {
		ann[k] = v
	}
	for k, v := range chosen.annotations {
		ann[k] = v
	}
	switch {
	case ann[AnnotationContainerdName] != "":
		a.Metadata.Ref = familiarRef(ann[AnnotationContainerdName])
	case strings.ContainsAny(ann[AnnotationRefName], "/:"):
		// A bare ref.name is often only a tag (buildx writes "0.1.0").
		a.Metadata.Ref = ann[AnnotationRefName]
	}
	return ann, nil
}

// walker walks the graph of image indexes an OCI layout holds, gathering
// image manifests and skipping attestations. Each index is read once
// however often it is listed, and the whole walk is bounded by the
// archive's Limits, so that indexes listing each other many times cost no
// more than their size.
type walker struct {
	ctx         context.Context
	arc         *archive
	visited     int                         // descriptors seen, repeats included
	walked      map[v1.Hash]bool            // indexes read and images gathered
	sniffed     map[v1.Hash]types.MediaType // of documents whose descriptors lack one
	cands       []candidate
	unsupported []string
}

func (w *walker) walk(descs []v1.Descriptor, inherited map[string]string, depth int) error {
	arc, limits := w.arc, w.arc.limits
	if depth > limits.MaxIndexDepth {
		return limitf(arc.path, "MaxIndexDepth", "image indexes nested more than %d deep", limits.MaxIndexDepth)
	}
	if len(descs) > limits.MaxDocumentEntries {
		return limitf(arc.path, "MaxDocumentEntries", "an image index lists %d entries, more than %d", len(descs), limits.MaxDocumentEntries)
	}
	for _, d := range descs {
		if err := w.ctx.Err(); err != nil {
			return fmt.Errorf("reading artifact %s: %w", arc.path, err)
		}
		if w.visited++; w.visited > limits.MaxDescriptors {
			return limitf(arc.path, "MaxDescriptors", "the image indexes list more than %d descriptors in all", limits.MaxDescriptors)
		}
		if w.walked[d.Digest] {
			continue
		}
		ann := inherited
		if depth == 0 {
			ann = d.Annotations
		}
		mt := d.MediaType
		if mt == "" {
			mt = w.sniffed[d.Digest]
		}
		var raw []byte
		if mt == "" || mt.IsIndex() {
			var err error
			if raw, err = arc.readBlob(d); err != nil {
				return err
			}
		}
		if mt == "" {
			sniffed, err := sniffMediaType(arc, d, raw)
			if err != nil {
				return err
			}
			mt = sniffed
			w.sniffed[d.Digest] = mt
		}
		switch {
		case mt.IsIndex():
			w.walked[d.Digest] = true
			var child v1.IndexManifest
			if err := json.Unmarshal(raw, &child); err != nil {
				return faultf(arc.path, FaultMalformed, err, "parsing image index %s", d.Digest)
			}
			if err := w.walk(child.Manifests, ann, depth+1); err != nil {
				return err
			}
		case mt.IsImage():
			// buildx attaches provenance and SBOMs as image manifests marked
			// like this, for platform unknown/unknown.
			if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
				continue
			}
			if d.Platform != nil && d.Platform.OS == "unknown" {
				continue
			}
			w.walked[d.Digest] = true
			d.MediaType = mt
			w.cands = append(w.cands, candidate{desc: d, annotations: ann})
		default:
			w.unsupported = append(w.unsupported, quote(string(mt)))
		}
	}
	return nil
}

// sniffMediaType reads a descriptor's media type from the document it
// points to (raw), for old layouts whose descriptors lack one.
func sniffMediaType(arc *archive, d v1.Descriptor, raw []byte) (types.MediaType, error) {
	var doc struct {
		MediaType types.MediaType  `json:"mediaType"`
		Manifests *json.RawMessage `json:"manifests"`
		Config    *json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return "", faultf(arc.path, FaultMalformed, err, "parsing %s", d.Digest)
	}
	switch {
	case doc.MediaType != "":
		return doc.MediaType, nil
	case doc.Manifests != nil:
		return types.OCIImageIndex, nil
	case doc.Config != nil:
		return types.OCIManifestSchema1, nil
	}
	return "", faultf(arc.path, FaultUnsupportedMediaType, nil, "%s is neither an image manifest nor an index", d.Digest)
}

// choose picks the one image to use: the only one, or the only one for
// linux on this machine's architecture.
func (a *Artifact) choose(ctx context.Context, arc *archive, cands []candidate) (candidate, error) {
	if len(cands) == 1 {
		return cands[0], nil
	}
	var matches []candidate
	var seen []string
	platforms := map[v1.Hash]*v1.Platform{} // by config digest
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			return candidate{}, fmt.Errorf("reading artifact %s: %w", a.Path, err)
		}
		p := c.desc.Platform
		if p == nil {
			var err error
			if p, err = a.platformOf(arc, c.desc, platforms); err != nil {
				return candidate{}, err
			}
		}
		seen = append(seen, fmt.Sprintf("%s (%s/%s)", c.desc.Digest, clip(p.OS, maxQuoted), clip(p.Architecture, maxQuoted)))
		if p.OS == "linux" && p.Architecture == runtime.GOARCH {
			matches = append(matches, c)
		}
	}
	if len(matches) == 1 {
		return matches[0], nil
	}
	return candidate{}, faultf(a.Path, FaultAmbiguous, nil, "%d images and %d of them for linux/%s: %s",
		len(cands), len(matches), runtime.GOARCH, list(seen))
}

// platformOf reads the platform of an image whose index entry gives none
// from its config, reading each config once.
func (a *Artifact) platformOf(arc *archive, d v1.Descriptor, byConfig map[v1.Hash]*v1.Platform) (*v1.Platform, error) {
	m, _, err := a.readManifest(arc, d)
	if err != nil {
		return nil, err
	}
	if p, ok := byConfig[m.Config.Digest]; ok {
		return p, nil
	}
	raw, err := arc.readBlob(m.Config)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, faultf(a.Path, FaultMalformed, err, "parsing image config %s", m.Config.Digest)
	}
	p := &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture}
	byConfig[m.Config.Digest] = p
	return p, nil
}

// supportedLayers are the layer media types Open accepts.
var supportedLayers = []types.MediaType{
	types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer,
	types.DockerLayer, types.DockerUncompressedLayer,
}

// readManifest reads and parses an image manifest, checking its media
// types and the number of layers it lists.
func (a *Artifact) readManifest(arc *archive, d v1.Descriptor) (*v1.Manifest, []byte, error) {
	raw, err := arc.readBlob(d)
	if err != nil {
		return nil, nil, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nil, faultf(a.Path, FaultMalformed, err, "parsing manifest %s", d.Digest)
	}
	mt := d.MediaType
	if m.MediaType != "" {
		mt = m.MediaType
	}
	if !mt.IsImage() {
		return nil, nil, faultf(a.Path, FaultUnsupportedMediaType, nil, "manifest %s has media type %s", d.Digest, quote(string(mt)))
	}
	if !m.Config.MediaType.IsConfig() {
		return nil, nil, faultf(a.Path, FaultUnsupportedMediaType, nil, "config %s has media type %s, not an image config", m.Config.Digest, quote(string(m.Config.MediaType)))
	}
	if len(m.Layers) > arc.limits.MaxDocumentEntries {
		return nil, nil, limitf(a.Path, "MaxDocumentEntries", "manifest %s lists %d layers, more than %d", d.Digest, len(m.Layers), arc.limits.MaxDocumentEntries)
	}
	m.MediaType = mt
	return &m, raw, nil
}

// loadManifest reads and checks an image manifest, its config and layers,
// and makes them the artifact's.
func (a *Artifact) loadManifest(arc *archive, d v1.Descriptor) (*v1.Manifest, error) {
	m, raw, err := a.readManifest(arc, d)
	if err != nil {
		return nil, err
	}
	ce, err := arc.blob(m.Config)
	if err != nil {
		return nil, err
	}
	if err := a.setConfig(arc, ce); err != nil {
		return nil, err
	}
	if len(m.Layers) != len(a.Config.RootFS.DiffIDs) {
		return nil, faultf(a.Path, FaultMalformed, nil, "manifest %s lists %d layers but its config %d diff IDs", d.Digest, len(m.Layers), len(a.Config.RootFS.DiffIDs))
	}
	a.blobs = map[v1.Hash]*entry{}
	a.Layers = nil
	for i, l := range m.Layers {
		if !slices.Contains(supportedLayers, l.MediaType) {
			return nil, faultf(a.Path, FaultUnsupportedMediaType, nil, "layer %s has media type %s", l.Digest, quote(string(l.MediaType)))
		}
		le, err := arc.blob(l)
		if err != nil {
			return nil, err
		}
		a.blobs[l.Digest] = le
		a.Layers = append(a.Layers, Layer{Digest: l.Digest, Size: l.Size, DiffID: a.Config.RootFS.DiffIDs[i], MediaType: l.MediaType})
	}
	a.mediaType = m.MediaType
	a.rawManifest = raw
	a.Digest = d.Digest
	return m, nil
}

func (a *Artifact) setConfig(arc *archive, ce *entry) error {
	raw, err := arc.read(ce)
	if err != nil {
		return err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return faultf(a.Path, FaultMalformed, err, "parsing image config %s", quote(ce.name))
	}
	a.Config = *cfg
	a.rawConfig = raw
	a.ConfigDigest = ce.sum
	return nil
}

// CheckLayers decompresses every layer, checking that it has the diff ID
// the config records and stays within the expansion limits, so that no
// layer reaches an engine unchecked. Open does this unless given
// WithDeferredLayerCheck; a second call returns at once.
func (a *Artifact) CheckLayers(ctx context.Context) error {
	a.layersMu.Lock()
	checked := a.expanded != nil
	a.layersMu.Unlock()
	if checked {
		return nil
	}
	f, err := os.Open(a.Path)
	if err != nil {
		return &Error{Path: a.Path, Fault: FaultUnreadable, Err: err}
	}
	defer f.Close()
	return a.checkLayers(ctx, &archive{path: a.Path, ra: f, limits: a.limits})
}

// checkLayers is CheckLayers on an open archive.
func (a *Artifact) checkLayers(ctx context.Context, arc *archive) error {
	type result struct {
		diffID v1.Hash
		size   int64
	}
	done := map[v1.Hash]result{}
	expanded := map[v1.Hash]int64{}
	var total int64
	for _, l := range a.Layers {
		r, ok := done[l.Digest]
		if !ok {
			e := a.blobs[l.Digest]
			limit, budget := "MaxExpansionRatio", arc.limits.maxExpanded(e.size)
			if budget == arc.limits.MaxLayerSize {
				limit = "MaxLayerSize"
			}
			if left := arc.limits.MaxImageSize - total; left < budget {
				limit, budget = "MaxImageSize", left
			}
			diffID, size, err := arc.diffID(ctx, e, budget)
			if errors.Is(err, errExpansion) {
				return limitf(a.Path, limit, "layer %s (%d bytes) decompresses to more than %d bytes", quote(e.name), e.size, budget)
			}
			if err != nil {
				return err
			}
			r = result{diffID, size}
			done[l.Digest] = r
			expanded[l.Digest] = size
		}
		if r.diffID != l.DiffID {
			return faultf(a.Path, FaultDigestMismatch, nil, "layer %s has content with diff ID %s but the config records %s", l.Digest, r.diffID, l.DiffID)
		}
		if total += r.size; total > arc.limits.MaxImageSize {
			return limitf(a.Path, "MaxImageSize", "the layers hold more than %d bytes uncompressed", arc.limits.MaxImageSize)
		}
	}
	a.layersMu.Lock()
	a.expanded = expanded
	a.layersMu.Unlock()
	return nil
}

// readDockerManifest parses a docker-save manifest.json.
func readDockerManifest(arc *archive, e *entry) ([]dockerManifestEntry, error) {
	raw, err := arc.read(e)
	if err != nil {
		return nil, err
	}
	var entries []dockerManifestEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, faultf(arc.path, FaultMalformed, err, "parsing manifest.json")
	}
	max := arc.limits.MaxDocumentEntries
	if len(entries) > max {
		return nil, limitf(arc.path, "MaxDocumentEntries", "manifest.json lists %d images, more than %d", len(entries), max)
	}
	for _, de := range entries {
		if len(de.Layers) > max {
			return nil, limitf(arc.path, "MaxDocumentEntries", "manifest.json lists %d layers for an image, more than %d", len(de.Layers), max)
		}
	}
	return entries, nil
}

// checkDockerView makes sure the manifest.json next to an index describes
// the same image, since Docker's classic store loads the one and the
// containerd store the other.
func (a *Artifact) checkDockerView(arc *archive, e *entry) error {
	entries, err := readDockerManifest(arc, e)
	if err != nil {
		return err
	}
	for _, de := range entries {
		ce, ok := arc.lookup(de.Config)
		if !ok || ce.sum != a.ConfigDigest {
			continue
		}
		if len(de.Layers) != len(a.Layers) {
			return faultf(a.Path, FaultMalformed, nil, "manifest.json lists %d layers for the image, index.json %d", len(de.Layers), len(a.Layers))
		}
		loadable := true
		for i, p := range de.Layers {
			le, ok := arc.lookup(p)
			if !ok {
				return faultf(a.Path, FaultMalformed, nil, "manifest.json names layer file %s, which is missing", quote(p))
			}
			l := a.Layers[i]
			switch le.sum {
			case l.Digest:
				loadable = loadable && l.MediaType != types.OCILayerZStd
			case l.DiffID:
			default:
				return faultf(a.Path, FaultMalformed, nil, "manifest.json layer %d (%s) is not the layer index.json lists (%s)", i, quote(p), l.Digest)
			}
		}
		if len(de.RepoTags) > 0 && a.Metadata.Ref == "" {
			a.Metadata.Ref = de.RepoTags[0]
		}
		a.DockerLoadable = loadable
		return nil
	}
	return faultf(a.Path, FaultMalformed, nil, "manifest.json does not list the image index.json names (config %s)", a.ConfigDigest)
}

// fromDockerSave reads a docker-save archive without an index, synthesizing
// the manifest Docker would push for it. checkLayers then checks each
// layer file against its diff ID.
func (a *Artifact) fromDockerSave(ctx context.Context, arc *archive, e *entry) (map[string]string, error) {
	entries, err := readDockerManifest(arc, e)
	if err != nil {
		return nil, err
	}
	switch len(entries) {
	case 0:
		return nil, faultf(a.Path, FaultNoImage, nil, "manifest.json lists no image")
	case 1:
	default:
		var names []string
		for _, de := range entries {
			names = append(names, quote(strings.Join(de.RepoTags, " ")+" "+de.Config))
		}
		return nil, faultf(a.Path, FaultAmbiguous, nil, "manifest.json lists %d images: %s", len(entries), list(names))
	}
	de := entries[0]
	ce, ok := arc.lookup(de.Config)
	if !ok {
		return nil, faultf(a.Path, FaultMalformed, nil, "manifest.json names config %s, which is missing", quote(de.Config))
	}
	// Legacy archives name the config by its digest: <hex>.json.
	if base := strings.TrimSuffix(filepath.Base(ce.name), ".json"); len(base) == 64 && base != ce.sum.Hex && isHex(base) {
		return nil, faultf(a.Path, FaultDigestMismatch, nil, "config %s has content with digest %s", quote(ce.name), ce.sum)
	}
	if err := a.setConfig(arc, ce); err != nil {
		return nil, err
	}
	diffIDs := a.Config.RootFS.DiffIDs
	if len(de.Layers) != len(diffIDs) {
		return nil, faultf(a.Path, FaultMalformed, nil, "manifest.json lists %d layers but the config %d diff IDs", len(de.Layers), len(diffIDs))
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config:        v1.Descriptor{MediaType: types.DockerConfigJSON, Size: ce.size, Digest: ce.sum},
	}
	a.blobs = map[v1.Hash]*entry{}
	a.DockerLoadable = true
	for i, p := range de.Layers {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading artifact %s: %w", a.Path, err)
		}
		le, ok := arc.lookup(p)
		if !ok {
			return nil, faultf(a.Path, FaultMalformed, nil, "manifest.json names layer file %s, which is missing", quote(p))
		}
		// Compressed layer files are allowed; checkLayers checks that
		// they decompress to the diff ID.
		mt, err := arc.compression(le)
		if err != nil {
			return nil, err
		}
		a.DockerLoadable = a.DockerLoadable && mt != types.OCILayerZStd
		a.blobs[le.sum] = le
		a.Layers = append(a.Layers, Layer{Digest: le.sum, Size: le.size, DiffID: diffIDs[i], MediaType: mt})
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: le.size, Digest: le.sum})
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("synthesizing manifest: %w", err)
	}
	a.mediaType = m.MediaType
	a.rawManifest = raw
	a.Digest = jsonBlob(raw).digest
	if len(de.RepoTags) > 0 {
		a.Metadata.Ref = de.RepoTags[0]
	}
	return nil, nil
}

func isHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef") == ""
}
