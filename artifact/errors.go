package artifact

import (
	"fmt"
)

// Fault says what is wrong with an artifact file.
type Fault int

// The faults Open reports. Each has its own remedy, given in the message of
// the *Error that carries it.
const (
	// FaultMissing: the file does not exist.
	FaultMissing Fault = iota + 1
	// FaultUnreadable: the file exists but cannot be read.
	FaultUnreadable
	// FaultNotTar: the file is not a tar archive.
	FaultNotTar
	// FaultTruncated: the tar ends before its end-of-archive marker or in
	// the middle of an entry.
	FaultTruncated
	// FaultNoImage: the tar holds neither an OCI index.json nor a
	// docker-save manifest.json.
	FaultNoImage
	// FaultDigestMismatch: a blob's content does not match its digest (or
	// its size the size its descriptor records).
	FaultDigestMismatch
	// FaultUnsupportedMediaType: a manifest, config or layer has a media
	// type this package cannot read (schema 1, foreign layers, bzip2, ...).
	FaultUnsupportedMediaType
	// FaultAmbiguous: the archive holds several images and none is the one
	// for this platform.
	FaultAmbiguous
	// FaultMalformed: the archive is a tar but its contents are inconsistent:
	// invalid JSON, a referenced blob that is absent, duplicate entries, a
	// link entry among the blobs, data after the end-of-archive marker.
	FaultMalformed
	// FaultLimit: reading the archive would exceed one of the Limits (its
	// size, entries, JSON documents, index nesting or fan-out, a layer's
	// expansion); Detail names the limit.
	FaultLimit
)

var faultNames = map[Fault]string{
	FaultMissing:              "missing file",
	FaultUnreadable:           "unreadable file",
	FaultNotTar:               "not a tar archive",
	FaultTruncated:            "truncated archive",
	FaultNoImage:              "no index.json or manifest.json",
	FaultDigestMismatch:       "digest mismatch",
	FaultUnsupportedMediaType: "unsupported media type",
	FaultAmbiguous:            "several images",
	FaultMalformed:            "malformed archive",
	FaultLimit:                "exceeds a limit",
}

// remedies say what the user can do about each fault.
var remedies = map[Fault]string{
	FaultMissing:              "check the path, or build the artifact with ociapp-build",
	FaultUnreadable:           "check the file's permissions",
	FaultNotTar:               "an .ociapp file is a tar archive written by ociapp-build, docker save or an OCI exporter; rebuild it",
	FaultTruncated:            "the file was cut short, perhaps by an interrupted copy or download; copy or build it again",
	FaultNoImage:              "this tar is not an image archive; build the artifact with ociapp-build",
	FaultDigestMismatch:       "the file is corrupt; copy or build it again",
	FaultUnsupportedMediaType: "rebuild the image with ociapp-build (OCI or Docker v2 images with tar, gzip or zstd layers are supported)",
	FaultAmbiguous:            "keep one image in the archive: build it for a single platform or save a single image",
	FaultMalformed:            "the archive is damaged or was not written by an image tool; rebuild it",
	FaultLimit:                "the archive is larger or more deeply nested than any image needs; if it is genuine, raise the limit (artifact.Limits)",
}

func (f Fault) String() string {
	if s, ok := faultNames[f]; ok {
		return s
	}
	return fmt.Sprintf("fault %d", int(f))
}

// Error reports why an artifact file cannot be used. Match it with
// errors.As and switch on Fault.
type Error struct {
	// Path is the artifact file.
	Path string
	// Fault is the kind of problem.
	Fault Fault
	// Detail says exactly what was found, e.g. which blob does not match.
	Detail string
	// Err is the underlying error, if any.
	Err error
}

// maxDetail bounds the parts of a message that can repeat the file's
// content, so that no archive makes a long error body or log line.
const maxDetail = 1024

func (e *Error) Error() string {
	msg := fmt.Sprintf("artifact %s: %s", e.Path, e.Fault)
	if e.Detail != "" {
		msg += ": " + clip(e.Detail, maxDetail)
	}
	if e.Err != nil {
		msg += ": " + clip(e.Err.Error(), maxDetail)
	}
	if r := remedies[e.Fault]; r != "" {
		msg += "; " + r
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

func faultf(path string, fault Fault, err error, format string, args ...any) *Error {
	return &Error{Path: path, Fault: fault, Detail: fmt.Sprintf(format, args...), Err: err}
}
