package api

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/ociapp/ociapp/internal/mpwire"
	"github.com/vmihailenco/msgpack/v5"
)

// The execute channel (docs/daemon.md, "Execute channel"): an HTTP/1.1
// Upgrade on MuxPath to frames of a 4-byte big-endian length and a msgpack
// map, many requests in flight, answered in completion order.
const (
	MuxPath     = Version + "/mux"
	MuxProtocol = "ociapp-mux/1"
	// MuxEnvelopeAllowance is what a request frame may hold beyond its
	// payload: its keys, id, digest or path and file identity.
	MuxEnvelopeAllowance = 8 << 10
	// muxIDPrefix is how much of a frame names its request: a map header,
	// the key "id" and a uint64.
	muxIDPrefix = 1 + 3 + 9
)

// MuxRequest is one request on the execute channel. It names its artifact
// by Digest (an upload the daemon holds), or by Path and File (a file on
// the daemon's host, on a Unix socket only, as LocalExecutePath does).
type MuxRequest struct {
	ID      uint64
	Digest  string
	Path    string
	File    string
	Payload []byte
	// Cancel makes this a cancel frame, {"id", "cancel": true}: the
	// client gave up on the request with this ID (daemons that answer the
	// upgrade with MuxFeaturesHeader listing MuxFeatureCancel).
	Cancel bool
	// Stream, at least 1, asks for the response as a stream of items
	// (daemons listing MuxFeatureStream): the initial credit, how many
	// item frames the daemon may send before it waits for more.
	Stream uint64
	// Credit, at least 1, makes this a credit frame, {"id", "credit"}:
	// the stream with this ID may send that many more items.
	Credit uint64
	// Deadline, unless zero, is the time the request's caller has left
	// ("deadline_ms", for daemons listing MuxFeatureDeadline), counted
	// from when the daemon reads the frame. It is sent in whole
	// milliseconds, rounded up; a negative one (DeadlinePassed) as 0, a
	// time already up.
	Deadline time.Duration
}

// MuxFeaturesHeader, on the upgrade's 101 response, lists the frames the
// daemon takes beyond requests; MuxFeatureCancel is cancel frames,
// MuxFeatureStream stream requests and credit frames (and
// MuxFeatureDeadline, in deadline.go, a request's "deadline_ms").
const (
	MuxFeaturesHeader = "Ociapp-Mux-Features"
	MuxFeatureCancel  = "cancel"
	MuxFeatureStream  = "stream"
)

// MuxResponse answers the request with its ID: the response payload, or
// Error, an error body in msgpack (as an HTTP error response's). A stream
// is answered with Item frames, then End or Error.
type MuxResponse struct {
	ID      uint64
	Payload []byte
	Error   []byte
	Item    []byte
	End     bool
}

// AppendMuxRequest appends req as a frame: length, then the map with "id"
// first.
func AppendMuxRequest(dst []byte, req MuxRequest) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	if req.Cancel || req.Credit > 0 {
		dst = append(dst, 0x82)
		dst = mpwire.AppendUint64(mpwire.AppendStr(dst, "id"), req.ID)
		if req.Cancel {
			dst = append(mpwire.AppendStr(dst, "cancel"), 0xc3)
		} else {
			dst = appendUint(mpwire.AppendStr(dst, "credit"), req.Credit)
		}
		binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
		return dst
	}
	n := 2
	if req.Digest != "" {
		n++
	}
	if req.Stream > 0 {
		n++
	}
	if req.Deadline != 0 {
		n++
	}
	if req.Path != "" {
		n += 2
	}
	dst = append(dst, 0x80|byte(n))
	dst = mpwire.AppendStr(dst, "id")
	dst = mpwire.AppendUint64(dst, req.ID)
	if req.Digest != "" {
		dst = mpwire.AppendStr(mpwire.AppendStr(dst, "digest"), req.Digest)
	}
	if req.Path != "" {
		dst = mpwire.AppendStr(mpwire.AppendStr(dst, "path"), req.Path)
		dst = mpwire.AppendStr(mpwire.AppendStr(dst, "file"), req.File)
	}
	dst = mpwire.AppendBin(mpwire.AppendStr(dst, "payload"), req.Payload)
	if req.Stream > 0 {
		dst = appendUint(mpwire.AppendStr(dst, "stream"), req.Stream)
	}
	if req.Deadline != 0 {
		dst = mpwire.AppendInt(mpwire.AppendStr(dst, "deadline_ms"), DeadlineMillis(req.Deadline))
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// appendUint appends u as the smallest msgpack unsigned integer that holds
// it.
func appendUint(dst []byte, u uint64) []byte {
	if u > math.MaxInt64 {
		return mpwire.AppendUint64(dst, u)
	}
	return mpwire.AppendInt(dst, int64(u))
}

// AppendMuxResponse appends resp as a frame: length, then the map with
// "id" first and "payload", "error", "item" or "end".
func AppendMuxResponse(dst []byte, resp MuxResponse) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0x82)
	dst = mpwire.AppendUint64(mpwire.AppendStr(dst, "id"), resp.ID)
	switch {
	case resp.Error != nil:
		dst = mpwire.AppendBin(mpwire.AppendStr(dst, "error"), resp.Error)
	case resp.Item != nil:
		dst = mpwire.AppendBin(mpwire.AppendStr(dst, "item"), resp.Item)
	case resp.End:
		dst = append(mpwire.AppendStr(dst, "end"), 0xc3)
	default:
		dst = mpwire.AppendBin(mpwire.AppendStr(dst, "payload"), resp.Payload)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// MuxFrameID reads the id at the start of a frame's body, from as little
// as its first bytes: a frame too large to read is answered by it.
func MuxFrameID(prefix []byte) (uint64, bool) {
	if len(prefix) < 5 || prefix[0]&0xf0 != 0x80 || !bytes.HasPrefix(prefix[1:], []byte{0xa2, 'i', 'd'}) {
		return 0, false
	}
	id, err := msgpack.NewDecoder(bytes.NewReader(prefix[4:min(len(prefix), muxIDPrefix)])).DecodeUint64()
	return id, err == nil
}

// MuxIDPrefix is how many bytes of a frame MuxFrameID needs at most.
const MuxIDPrefix = muxIDPrefix

// DecodeMuxRequest decodes a request frame's body, or a cancel or credit
// frame's.
func DecodeMuxRequest(body []byte) (MuxRequest, error) {
	var req MuxRequest
	var seenID, seenPayload, seenCancel, seenCredit, seenDeadline bool
	err := mpwire.WalkMap(body, func(key []byte, r *mpwire.Reader) error {
		var err error
		switch string(key) {
		case "id":
			req.ID, err = r.Uint()
			seenID = true
		case "digest":
			req.Digest, err = readString(r)
		case "path":
			req.Path, err = readString(r)
		case "file":
			req.File, err = readString(r)
		case "payload":
			req.Payload, err = r.BinOrNil()
			seenPayload = req.Payload != nil
		case "cancel":
			req.Cancel, err = r.Bool()
			if err == nil && !req.Cancel {
				err = errors.New("must be true")
			}
			seenCancel = true
		case "stream":
			req.Stream, err = r.Uint()
			if err == nil && req.Stream == 0 {
				err = errors.New("must be at least 1 (the initial credit)")
			}
		case "credit":
			req.Credit, err = r.Uint()
			if err == nil && req.Credit == 0 {
				err = errors.New("must be at least 1")
			}
			seenCredit = true
		case "deadline_ms":
			req.Deadline, err = readDeadline(r)
			seenDeadline = true
		default:
			err = r.Skip()
		}
		return err
	})
	switch {
	case err != nil:
		return req, err
	case seenCancel && seenCredit:
		return req, errors.New("a frame is a cancel or a credit, not both")
	case seenCancel && (seenPayload || !seenID || req.Stream > 0 || seenDeadline):
		return req, errors.New("a cancel frame holds id and cancel alone")
	case seenCancel:
		return MuxRequest{ID: req.ID, Cancel: true}, nil
	case seenCredit && (seenPayload || !seenID || req.Stream > 0 || seenDeadline):
		return req, errors.New("a credit frame holds id and credit alone")
	case seenCredit:
		return MuxRequest{ID: req.ID, Credit: req.Credit}, nil
	case !seenID || !seenPayload:
		return req, errors.New("a request needs id and payload (bin)")
	case (req.Digest == "") == (req.Path == ""):
		return req, errors.New("a request names its artifact by digest, or by path and file")
	}
	return req, nil
}

// DecodeMuxResponse decodes a response frame's body.
func DecodeMuxResponse(body []byte) (MuxResponse, error) {
	var resp MuxResponse
	var seenID bool
	err := mpwire.WalkMap(body, func(key []byte, r *mpwire.Reader) error {
		var err error
		switch string(key) {
		case "id":
			resp.ID, err = r.Uint()
			seenID = true
		case "payload":
			resp.Payload, err = r.BinOrNil()
		case "error":
			resp.Error, err = r.BinOrNil()
		case "item":
			resp.Item, err = r.BinOrNil()
		case "end":
			resp.End, err = r.Bool()
			if err == nil && !resp.End {
				err = errors.New("must be true")
			}
		default:
			err = r.Skip()
		}
		return err
	})
	if err != nil {
		return resp, err
	}
	kinds := 0
	for _, set := range []bool{resp.Payload != nil, resp.Error != nil, resp.Item != nil, resp.End} {
		if set {
			kinds++
		}
	}
	if !seenID || kinds != 1 {
		return resp, errors.New("a response needs id and one of payload, error, item and end")
	}
	return resp, nil
}

// readString reads a string value.
func readString(r *mpwire.Reader) (string, error) {
	b, err := r.Str()
	return string(b), err
}

// readDeadline reads "deadline_ms", an integer: the milliseconds left,
// clamped to what a Duration holds, or DeadlinePassed for 0 or less (which
// a client sends once its time is up; negative ones are taken as well, as
// HeaderDeadline takes them).
func readDeadline(r *mpwire.Reader) (time.Duration, error) {
	ms, err := r.Int()
	return deadlineOfMillis(ms), err
}

// HeaderHas reports whether a comma-separated header of h lists token
// (case-insensitively), as Connection and MuxFeaturesHeader do.
func HeaderHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}
