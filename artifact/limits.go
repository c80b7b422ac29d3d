package artifact

import (
	"fmt"
	"strings"
	"unicode/utf8"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Limits bound what reading one artifact may cost in CPU, memory and time.
// An artifact is untrusted input: without them a small file could make Open
// run for hours (nested indexes), decompress gigabytes (a zstd bomb) or
// build huge error messages (an index listing 75,000 entries).
//
// The zero value of a field means its default (see DefaultLimits); a
// negative value removes that limit. Defaults pass real images, including
// multi-gigabyte ones, by a wide margin.
type Limits struct {
	// MaxArchiveSize is the largest file accepted, in bytes.
	MaxArchiveSize int64
	// MaxEntries is the number of tar entries (headers of any type) an
	// archive may hold.
	MaxEntries int
	// MaxJSONSize is the size in bytes of each JSON document read:
	// index.json, manifest.json, image indexes, manifests and configs.
	MaxJSONSize int64
	// MaxDocumentEntries is the number of entries one document may list:
	// descriptors in an index, layers in a manifest, images in or layers
	// of an image in manifest.json.
	MaxDocumentEntries int
	// MaxIndexDepth is how deep image indexes may nest below index.json.
	MaxIndexDepth int
	// MaxDescriptors is the number of descriptors visited in the whole
	// index graph, counting each listing of a repeated one.
	MaxDescriptors int
	// MaxLayerSize is the largest uncompressed layer, in bytes.
	MaxLayerSize int64
	// MaxImageSize is the largest sum of uncompressed layer sizes, in
	// bytes, counting a layer listed twice twice (the engine stores it
	// twice).
	MaxImageSize int64
	// MaxExpansionRatio bounds how much a compressed layer may expand: to
	// at most max(expansionAllowance, MaxExpansionRatio × its compressed
	// size).
	MaxExpansionRatio int64
}

// DefaultLimits returns the limits Open applies when none are given.
func DefaultLimits() Limits {
	return Limits{
		MaxArchiveSize:     16 << 30,
		MaxEntries:         10_000,
		MaxJSONSize:        4 << 20,
		MaxDocumentEntries: 1_000,
		MaxIndexDepth:      4,
		MaxDescriptors:     2_000,
		MaxLayerSize:       8 << 30,
		MaxImageSize:       16 << 30,
		MaxExpansionRatio:  100,
	}
}

// expansionAllowance is what any layer may expand to whatever its ratio: a
// tiny layer (a few empty directories padded to a tar record) compresses
// far better than 100:1.
const expansionAllowance = 16 << 20

// noLimit stands for a removed limit.
const noLimit = 1<<63 - 1

// withDefaults fills zero fields with the defaults and turns negative ones
// into noLimit, so that checks compare against one number.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	fill64 := func(v *int64, def int64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = noLimit
		}
	}
	fill := func(v *int, def int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = int(^uint(0) >> 1)
		}
	}
	fill64(&l.MaxArchiveSize, d.MaxArchiveSize)
	fill(&l.MaxEntries, d.MaxEntries)
	fill64(&l.MaxJSONSize, d.MaxJSONSize)
	fill(&l.MaxDocumentEntries, d.MaxDocumentEntries)
	fill(&l.MaxIndexDepth, d.MaxIndexDepth)
	fill(&l.MaxDescriptors, d.MaxDescriptors)
	fill64(&l.MaxLayerSize, d.MaxLayerSize)
	fill64(&l.MaxImageSize, d.MaxImageSize)
	fill64(&l.MaxExpansionRatio, d.MaxExpansionRatio)
	return l
}

// maxExpanded is the most a layer stored in compressed bytes may
// decompress to under l (withDefaults applied).
func (l Limits) maxExpanded(compressed int64) int64 {
	limit := int64(expansionAllowance)
	if compressed > 0 && l.MaxExpansionRatio < noLimit/compressed {
		limit = max(limit, l.MaxExpansionRatio*compressed)
	} else if compressed > 0 {
		limit = noLimit
	}
	return min(limit, l.MaxLayerSize)
}

// OpenOption configures Open.
type OpenOption func(*openConfig)

type openConfig struct {
	limits      Limits
	deferLayers bool
	verified    v1.Hash // the file's digest, when the caller verified it before
}

// WithDeferredLayerCheck makes Open verify every blob's digest but leave
// decompressing the layers (their diff IDs and expansion limits) to
// Artifact.CheckLayers, which WriteDockerArchive calls itself. A runtime
// whose engine already holds the image never pays for decompressing it.
func WithDeferredLayerCheck() OpenOption {
	return func(c *openConfig) { c.deferLayers = true }
}

// WithVerifiedFile tells Open that the caller verified this very file
// before and found fileDigest (Artifact.FileDigest): the caller remembers
// the file's identity (device, inode, size, modification time), so a
// changed file is not taken for it. Open then hashes neither the whole file
// nor the blobs it does not read, taking each blob's digest from its name;
// the index, manifests and config are hashed as they are read, as always.
// The layers stay bound to the verified config, since CheckLayers checks
// their diff IDs and WriteDockerArchive the file's digest. Reopening a
// 60 MB artifact costs a read of it instead of two hashes of every byte.
func WithVerifiedFile(fileDigest v1.Hash) OpenOption {
	return func(c *openConfig) { c.verified = fileDigest }
}

// WithLimits makes Open apply l instead of DefaultLimits; zero fields of l
// keep their default.
func WithLimits(l Limits) OpenOption {
	return func(c *openConfig) { c.limits = l }
}

// limitf reports an exceeded limit, naming it as Limits does.
func limitf(path, limit string, format string, args ...any) *Error {
	return faultf(path, FaultLimit, nil, "%s (Limits.%s)", fmt.Sprintf(format, args...), limit)
}

// maxQuoted is the most of an attacker-chosen string an error message
// repeats.
const maxQuoted = 96

// quote quotes s for an error message, cut to maxQuoted bytes: names, media
// types and digests come from the file, and a message must stay short
// whatever the file holds.
func quote(s string) string {
	return fmt.Sprintf("%q", clip(s, maxQuoted))
}

// clip cuts s to at most n bytes (on a rune boundary), saying how much was
// left out.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d more bytes)", s[:cut], len(s)-cut)
}

// list joins the first few items for an error message and counts the rest.
func list(items []string) string {
	const shown = 4
	if len(items) <= shown {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:shown], ", "), len(items)-shown)
}
