package artifact

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// maxJSON bounds the JSON documents (index, manifests, configs) read into
// memory; real ones are a few kilobytes.
const maxJSON = 16 << 20

// maxEntries bounds the entries of an archive; images have a few dozen.
const maxEntries = 1 << 16

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
	entries map[string]*entry
	file    v1.Hash // sha256 of the whole file
}

// countingReader counts what it reads and hashes it.
type countingReader struct {
	r io.Reader
	n int64
	h hash.Hash
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	return n, err
}

// scanTar reads the whole tar once, recording each entry's place and digest
// and verifying every blob under blobs/sha256 against its name.
func scanTar(ra io.ReaderAt, size int64, name string) (*archive, error) {
	if size == 0 {
		return nil, faultf(name, FaultNotTar, nil, "the file is empty")
	}
	cr := &countingReader{r: io.NewSectionReader(ra, 0, size), h: sha256.New()}
	tr := tar.NewReader(cr)
	a := &archive{path: name, ra: ra, entries: map[string]*entry{}}
	var last string
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
				return nil, faultf(name, FaultTruncated, nil, "the archive stops after %q without an end-of-archive marker", last)
			}
			break
		}
		if err != nil {
			switch {
			case last == "":
				return nil, faultf(name, FaultNotTar, nil, "%s", sniff(ra, size))
			case errors.Is(err, io.ErrUnexpectedEOF):
				return nil, faultf(name, FaultTruncated, nil, "the archive stops inside the header after %q", last)
			default:
				return nil, faultf(name, FaultMalformed, err, "reading the header after %q", last)
			}
		}
		if len(a.entries) >= maxEntries {
			return nil, faultf(name, FaultMalformed, nil, "more than %d entries", maxEntries)
		}
		entryName := cleanName(hdr.Name)
		last = hdr.Name
		switch hdr.Typeflag {
		case tar.TypeReg:
			// A sparse entry's size can exceed the file (holes read as
			// zeros); images never hold sparse entries.
			if hdr.Size > size-cr.n {
				return nil, faultf(name, FaultTruncated, nil, "the archive stops inside %q", hdr.Name)
			}
			e := &entry{name: entryName, offset: cr.n, size: hdr.Size}
			h := sha256.New()
			if _, err := io.Copy(h, tr); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, faultf(name, FaultTruncated, nil, "the archive stops inside %q", hdr.Name)
				}
				return nil, faultf(name, FaultMalformed, err, "reading %q", hdr.Name)
			}
			if cr.n-e.offset != e.size {
				return nil, faultf(name, FaultMalformed, nil, "%q is a sparse file", hdr.Name)
			}
			e.sum = hashOf(h)
			if m := sha256BlobName.FindStringSubmatch(entryName); m != nil && m[1] != e.sum.Hex {
				return nil, faultf(name, FaultDigestMismatch, nil, "blob %s has content with digest %s", entryName, e.sum)
			}
			if err := a.add(e); err != nil {
				return nil, err
			}
		case tar.TypeSymlink:
			target := hdr.Linkname
			if !strings.HasPrefix(target, "/") {
				target = path.Join(path.Dir(entryName), target)
			}
			if err := a.add(&entry{name: entryName, link: cleanName(target)}); err != nil {
				return nil, err
			}
		case tar.TypeLink:
			if err := a.add(&entry{name: entryName, link: cleanName(hdr.Linkname)}); err != nil {
				return nil, err
			}
		}
		dataEnd = cr.n
	}
	// Hash what follows the marker too (padding to the record size), so the
	// file digest covers the whole file.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, faultf(name, FaultUnreadable, err, "reading")
	}
	a.file = hashOf(cr.h)
	return a, nil
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
	if e.size > maxJSON {
		return nil, faultf(a.path, FaultMalformed, nil, "%s is %d bytes, too large for a JSON document", e.name, e.size)
	}
	buf := make([]byte, e.size)
	if _, err := a.ra.ReadAt(buf, e.offset); err != nil {
		return nil, faultf(a.path, FaultUnreadable, err, "reading %s", e.name)
	}
	if sum := sha256.Sum256(buf); hex.EncodeToString(sum[:]) != e.sum.Hex {
		return nil, faultf(a.path, FaultDigestMismatch, nil, "%s changed while it was being read", e.name)
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

// blob finds the blob a descriptor names and checks its size.
func (a *archive) blob(d v1.Descriptor) (*entry, error) {
	if d.Digest.Algorithm != "sha256" {
		return nil, faultf(a.path, FaultMalformed, nil, "digest %q: only sha256 digests are supported", d.Digest)
	}
	e, ok := a.lookup(blobPath(d.Digest))
	if !ok {
		return nil, faultf(a.path, FaultMalformed, nil, "blob %s is missing", d.Digest)
	}
	if e.size != d.Size {
		return nil, faultf(a.path, FaultDigestMismatch, nil, "blob %s is %d bytes but its descriptor says %d", d.Digest, e.size, d.Size)
	}
	return e, nil
}
