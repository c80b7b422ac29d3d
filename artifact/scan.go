package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tarRecord is the record size tar writers pad an archive to (20 blocks
// of 512 bytes): the zeros an archive may carry after its end marker.
const tarRecord = 10240

// maxName bounds the names and link targets of entries: an image's are
// below 100 bytes, and the table of entries must not grow with a file of
// long names.
const maxName = 1024

var sha256BlobName = regexp.MustCompile(`^blobs/sha256/([0-9a-f]{64})$`)

// entry is a file in the archive: where its content lies and its sha256.
type entry struct {
	name   string
	offset int64
	size   int64
	sum    v1.Hash
	link   string // target of a symbolic or hard link; offset etc. unset
}

// archive is the table of contents of a scanned tar, every file's content
// hashed once.
type archive struct {
	path    string
	ra      io.ReaderAt
	limits  Limits // withDefaults applied
	entries map[string]*entry
	file    v1.Hash // sha256 of the whole file
}

// countingReader counts what it reads and passes it to h.
type countingReader struct {
	r io.Reader
	n int64
	h io.Writer
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	return n, err
}

// scanTar reads the whole tar once, recording each entry's place and digest
// and verifying every blob under blobs/sha256 against its name. With a
// verified file digest (WithVerifiedFile) it hashes neither the file nor
// the blobs, whose digests it takes from their names: the documents among
// them are hashed when read (archive.read), and the layers are checked
// against the config when they are used (checkLayers).
func scanTar(ctx context.Context, ra io.ReaderAt, size int64, name string, limits Limits, verified v1.Hash) (*archive, error) {
	if size == 0 {
		return nil, faultf(name, FaultNotTar, nil, "the file is empty")
	}
	if size > limits.MaxArchiveSize {
		return nil, limitf(name, "MaxArchiveSize", "the file is %d bytes, more than %d", size, limits.MaxArchiveSize)
	}
	trusted := verified != v1.Hash{}
	cr := &countingReader{r: &ctxReader{ctx: ctx, r: io.NewSectionReader(ra, 0, size)}, h: io.Discard}
	var fileHash *sideHash
	if !trusted {
		fileHash = newSideHash()
		defer fileHash.Close()
		cr.h = fileHash
	}
	tr := tar.NewReader(cr)
	a := &archive{path: name, ra: ra, limits: limits, entries: map[string]*entry{}}
	var last string
	headers := 0
	dataEnd := int64(0)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if last == "" {
				return nil, faultf(name, FaultNotTar, nil, "the archive holds no files")
			}
			// Next returns io.EOF both after the two zero blocks that end
			// a tar and when the file simply stops between entries; only the
			// first consumed the 1024 bytes of the marker.
			if cr.n-dataEnd < 1024 {
				return nil, faultf(name, FaultTruncated, nil, "the archive stops after %s without an end-of-archive marker", quote(last))
			}
			break
		}
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, fmt.Errorf("reading artifact %s: %w", name, ctxErr)
			}
			switch {
			case last == "":
				return nil, faultf(name, FaultNotTar, nil, "%s", sniff(ra, size))
			case errors.Is(err, io.ErrUnexpectedEOF):
				return nil, faultf(name, FaultTruncated, nil, "the archive stops inside the header after %s", quote(last))
			default:
				return nil, faultf(name, FaultMalformed, err, "reading the header after %s", quote(last))
			}
		}
		if headers++; headers > limits.MaxEntries {
			return nil, limitf(name, "MaxEntries", "the archive holds more than %d entries", limits.MaxEntries)
		}
		if len(hdr.Name) > maxName || len(hdr.Linkname) > maxName {
			return nil, faultf(name, FaultLimit, nil, "an entry after %s has a name or link target of %d bytes, more than %d", quote(last), max(len(hdr.Name), len(hdr.Linkname)), maxName)
		}
		entryName := cleanName(hdr.Name)
		last = hdr.Name
		switch hdr.Typeflag {
		case tar.TypeReg:
			// A sparse entry's size can exceed the file (holes read as
			// zeros); images never hold sparse entries.
			if hdr.Size > size-cr.n {
				return nil, faultf(name, FaultTruncated, nil, "the archive stops inside %s", quote(hdr.Name))
			}
			e := &entry{name: entryName, offset: cr.n, size: hdr.Size}
			blobName := sha256BlobName.FindStringSubmatch(entryName)
			var h hash.Hash = sha256.New()
			if trusted && blobName != nil {
				h = discardHash{}
			}
			if _, err := io.Copy(h, tr); err != nil {
				if ctxErr := ctx.Err(); ctxErr != nil {
					return nil, fmt.Errorf("reading artifact %s: %w", name, ctxErr)
				}
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, faultf(name, FaultTruncated, nil, "the archive stops inside %s", quote(hdr.Name))
				}
				return nil, faultf(name, FaultMalformed, err, "reading %s", quote(hdr.Name))
			}
			if cr.n-e.offset != e.size {
				return nil, faultf(name, FaultMalformed, nil, "%s is a sparse file", quote(hdr.Name))
			}
			if _, skipped := h.(discardHash); skipped {
				e.sum = v1.Hash{Algorithm: "sha256", Hex: blobName[1]}
			} else {
				e.sum = hashOf(h)
			}
			if m := blobName; m != nil && m[1] != e.sum.Hex {
				return nil, faultf(name, FaultDigestMismatch, nil, "blob %s has content with digest %s", entryName, e.sum)
			}
			if err := a.add(e); err != nil {
				return nil, err
			}
		case tar.TypeSymlink, tar.TypeLink:
			// A blob is what its bytes hash to, so it must be a file with
			// bytes: a link at blobs/sha256/<digest> would let any content
			// stand for any digest. No image tool writes links there
			// (docker save before 25 links only its <id>/layer.tar files).
			if entryName == "blobs" || strings.HasPrefix(entryName, "blobs/") {
				return nil, faultf(name, FaultMalformed, nil, "%s is a link; blobs must be regular files", quote(hdr.Name))
			}
			target := cleanName(hdr.Linkname)
			if hdr.Typeflag == tar.TypeSymlink && !strings.HasPrefix(hdr.Linkname, "/") {
				target = cleanName(path.Join(path.Dir(entryName), hdr.Linkname))
			}
			if err := a.add(&entry{name: entryName, link: target}); err != nil {
				return nil, err
			}
		}
		dataEnd = cr.n
	}
	// Writers may pad the archive with zeros to a whole record; anything
	// else after the marker is data no reader sees, which would make two
	// files of one image differ (and cost storage for nothing).
	if err := checkTrailer(cr, name); err != nil {
		return nil, err
	}
	a.file = verified
	if !trusted {
		a.file = fileHash.Sum()
	}
	return a, nil
}

// discardHash stands in for a hash that is not computed.
type discardHash struct{}

func (discardHash) Write(p []byte) (int, error) { return len(p), nil }
func (discardHash) Sum(b []byte) []byte         { return b }
func (discardHash) Reset()                      {}
func (discardHash) Size() int                   { return 0 }
func (discardHash) BlockSize() int              { return 1 }

// checkTrailer reads what follows the end-of-archive marker (hashing it, so
// the file digest covers the whole file): at most a record of zeros.
func checkTrailer(cr *countingReader, name string) error {
	markerEnd := cr.n
	buf := make([]byte, 4096)
	for {
		n, err := cr.Read(buf)
		if slices.ContainsFunc(buf[:n], func(b byte) bool { return b != 0 }) {
			return faultf(name, FaultMalformed, nil, "data follows the end-of-archive marker at byte %d", markerEnd)
		}
		if cr.n-markerEnd > tarRecord {
			return faultf(name, FaultMalformed, nil, "more than %d bytes of padding follow the end-of-archive marker at byte %d", tarRecord, markerEnd)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return faultf(name, FaultUnreadable, err, "reading")
		}
	}
}

func (a *archive) add(e *entry) error {
	if _, dup := a.entries[e.name]; dup {
		return faultf(a.path, FaultMalformed, nil, "the archive holds %q twice", e.name)
	}
	a.entries[e.name] = e
	return nil
}

// cleanName maps a tar entry name to a slash-separated path relative to the
// archive root ("./blobs/x" and "/blobs/x" are "blobs/x").
func cleanName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// sniff says what a file that is not a tar seems to be.
func sniff(ra io.ReaderAt, size int64) string {
	head := make([]byte, 4)
	n, _ := ra.ReadAt(head, 0)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return "the file is gzip-compressed; decompress it first (gunzip)"
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "the file is zstd-compressed; decompress it first (zstd -d)"
	case size < 512:
		return fmt.Sprintf("the file is %d bytes, shorter than one tar header", size)
	}
	return "the first tar header is invalid"
}

// lookup finds a file by name, following links inside the archive.
func (a *archive) lookup(name string) (*entry, bool) {
	name = cleanName(name)
	for range 16 {
		e, ok := a.entries[name]
		if !ok {
			return nil, false
		}
		if e.link == "" {
			return e, true
		}
		name = e.link
	}
	return nil, false
}

// read returns a file's content, checking it is still what the scan saw.
func (a *archive) read(e *entry) ([]byte, error) {
	if e.size > a.limits.MaxJSONSize {
		return nil, limitf(a.path, "MaxJSONSize", "%s is %d bytes, more than %d for a JSON document", quote(e.name), e.size, a.limits.MaxJSONSize)
	}
	buf := make([]byte, e.size)
	if _, err := a.ra.ReadAt(buf, e.offset); err != nil {
		return nil, faultf(a.path, FaultUnreadable, err, "reading %s", quote(e.name))
	}
	if sum := sha256.Sum256(buf); hex.EncodeToString(sum[:]) != e.sum.Hex {
		return nil, faultf(a.path, FaultDigestMismatch, nil, "%s changed while it was being read", quote(e.name))
	}
	return buf, nil
}

// readBlob returns the content of the blob a descriptor names, checked as
// blob and read check it.
func (a *archive) readBlob(d v1.Descriptor) ([]byte, error) {
	e, err := a.blob(d)
	if err != nil {
		return nil, err
	}
	return a.read(e)
}

// blob finds the blob a descriptor names and checks its size and that the
// bytes stored under its name hash to its digest.
func (a *archive) blob(d v1.Descriptor) (*entry, error) {
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 || !isHex(d.Digest.Hex) {
		return nil, faultf(a.path, FaultMalformed, nil, "digest %s: only sha256 digests are supported", quote(d.Digest.String()))
	}
	e, ok := a.entries[blobPath(d.Digest)]
	if !ok {
		return nil, faultf(a.path, FaultMalformed, nil, "blob %s is missing", d.Digest)
	}
	// scanTar admits only regular files under blobs/, each hashing to its
	// name; checking the hash here too keeps that true whatever changes.
	if e.link != "" || e.sum != d.Digest {
		return nil, faultf(a.path, FaultDigestMismatch, nil, "blob %s has content with digest %s", d.Digest, e.sum)
	}
	if e.size != d.Size {
		return nil, faultf(a.path, FaultDigestMismatch, nil, "blob %s is %d bytes but its descriptor says %d", d.Digest, e.size, d.Size)
	}
	return e, nil
}
