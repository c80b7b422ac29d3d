package protocol

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/ociapp/ociapp/internal/mpwire"
)

// ID is a request id: a UUID, sent as its canonical lowercase string.
type ID [16]byte

// String returns the canonical form, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
func (id ID) String() string { return uuid.UUID(id).String() }

// ParseID accepts the forms Python's uuid.UUID accepts (canonical, 32 hex
// digits, braces, urn:uuid:, any case), as the original server did.
func ParseID(s string) (ID, error) {
	u, err := uuid.Parse(s)
	return ID(u), err
}

// idSource makes request ids cheaply: a random prefix fixed per source and a
// counter, shaped as version-4 UUIDs. Ids only need to be unique per
// connection; the random prefix also keeps them unique across connections.
type idSource struct {
	prefix [8]byte
	next   atomic.Uint64
}

func newIDSource() *idSource {
	s := &idSource{}
	_, _ = rand.Read(s.prefix[:]) // crypto/rand.Read never fails
	s.prefix[6] = s.prefix[6]&0x0f | 0x40
	return s
}

func (s *idSource) id() ID {
	var id ID
	copy(id[:8], s.prefix[:])
	binary.BigEndian.PutUint64(id[8:], s.next.Add(1))
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	return id
}

// Request is a request envelope.
type Request struct {
	ID      ID
	Payload []byte // msgpack encoding of the request map
	// Deadline is the time the handler has for the request, counted from
	// when the server reads it ("deadline_ms", the deadline capability;
	// zero: none, and the key is not written). It is sent in whole
	// milliseconds, rounded up.
	Deadline time.Duration
	// Cancel makes this a cancel envelope (the cancel capability): the
	// client gave up on the request with this ID. It has no payload.
	Cancel bool
	// Stream, when positive, asks for the response as a stream of items
	// (the stream capability): the server may send this many items before
	// it waits for credit ("stream", the initial credit).
	Stream int
	// Credit, when positive, makes this a credit envelope (the stream
	// capability): the server of the stream with this ID may send this
	// many more items. It has no payload.
	Credit int
}

// Response is an envelope from the server: a response, in which exactly
// one of Payload and Error is non-nil (Payload holds the msgpack encoding
// of the response map, Error the msgpack encoding of an error map, see
// DecodeError), or, for a stream (the stream capability), an item or the
// end of the stream.
type Response struct {
	ID      ID
	Payload []byte
	Error   []byte
	// Item makes this an item envelope: Payload holds one item of the
	// request's stream, the msgpack encoding of a map.
	Item bool
	// End makes this an end envelope: the request's stream ended after
	// all its items. A stream that fails ends with a response holding
	// Error instead.
	End bool

	// expired marks no response, but a call's time limit passing
	// (Client.CallWithin).
	expired bool
}

// requestOverhead is the size of a request envelope around its payload: the
// map header, the keys, the 36-byte id, the largest bin header, the
// largest deadline and the largest initial credit.
const requestOverhead = 1 + 11 + 2 + 36 + 8 + 5 + 12 + 9 + 7 + 5

// maxCredit bounds the credit one envelope may carry, so that a sum of
// credits stays far from overflowing.
const maxCredit = 1 << 30

// AppendRequestFrame appends req to dst as a complete frame: a request
// envelope, or a cancel envelope when req.Cancel is set.
func AppendRequestFrame(dst []byte, req Request) []byte {
	dst, start := beginFrame(dst)
	if req.Cancel {
		dst = mpwire.AppendMapHeader(dst, 2)
		dst = mpwire.AppendStr(dst, "request_id")
		dst = appendIDStr(dst, req.ID)
		dst = mpwire.AppendStr(dst, "cancel")
		dst = append(dst, 0xc3) // true
		return finishFrame(dst, start)
	}
	if req.Credit > 0 {
		dst = mpwire.AppendMapHeader(dst, 2)
		dst = mpwire.AppendStr(dst, "request_id")
		dst = appendIDStr(dst, req.ID)
		dst = mpwire.AppendStr(dst, "credit")
		dst = mpwire.AppendInt(dst, int64(req.Credit))
		return finishFrame(dst, start)
	}
	keys := 2
	if req.Deadline > 0 {
		keys++
	}
	if req.Stream > 0 {
		keys++
	}
	dst = mpwire.AppendMapHeader(dst, keys)
	dst = mpwire.AppendStr(dst, "request_id")
	dst = appendIDStr(dst, req.ID)
	dst = mpwire.AppendStr(dst, "payload")
	dst = appendBinOrNil(dst, nonNil(req.Payload))
	if req.Deadline > 0 {
		dst = mpwire.AppendStr(dst, "deadline_ms")
		dst = mpwire.AppendInt(dst, int64((req.Deadline+time.Millisecond-1)/time.Millisecond))
	}
	if req.Stream > 0 {
		dst = mpwire.AppendStr(dst, "stream")
		dst = mpwire.AppendInt(dst, int64(req.Stream))
	}
	return finishFrame(dst, start)
}

// AppendResponseFrame appends resp to dst as a complete frame: a response,
// item or end envelope.
func AppendResponseFrame(dst []byte, resp Response) []byte {
	dst, start := beginFrame(dst)
	switch {
	case resp.Item:
		dst = mpwire.AppendMapHeader(dst, 2)
		dst = mpwire.AppendStr(dst, "request_id")
		dst = appendIDStr(dst, resp.ID)
		dst = mpwire.AppendStr(dst, "item")
		dst = appendBinOrNil(dst, nonNil(resp.Payload))
		return finishFrame(dst, start)
	case resp.End:
		dst = mpwire.AppendMapHeader(dst, 2)
		dst = mpwire.AppendStr(dst, "request_id")
		dst = appendIDStr(dst, resp.ID)
		dst = mpwire.AppendStr(dst, "end")
		dst = append(dst, 0xc3) // true
		return finishFrame(dst, start)
	}
	dst = mpwire.AppendMapHeader(dst, 3)
	dst = mpwire.AppendStr(dst, "request_id")
	dst = appendIDStr(dst, resp.ID)
	dst = mpwire.AppendStr(dst, "payload")
	dst = appendBinOrNil(dst, resp.Payload)
	dst = mpwire.AppendStr(dst, "error")
	dst = appendBinOrNil(dst, resp.Error)
	return finishFrame(dst, start)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// appendIDStr writes id as a 36-character msgpack string (str8, as the
// original encoder does for strings of 32 bytes or more).
func appendIDStr(dst []byte, id ID) []byte {
	dst = append(dst, 0xd9, 36)
	n := len(dst)
	dst = append(dst, make([]byte, 36)...)
	b := dst[n:]
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return dst
}

// maxDeadlineMS bounds a decoded deadline to what a Duration holds.
const maxDeadlineMS = uint64(math.MaxInt64 / int64(time.Millisecond))

// DecodeRequest decodes a request envelope, a cancel envelope (a body
// with a cancel key: Request.Cancel) or a credit envelope (a body with a
// credit key: Request.Credit) from a frame body. Unknown keys are ignored,
// as the original's envelope model ignored them.
func DecodeRequest(body []byte) (Request, error) {
	var req Request
	var haveID, havePayload, haveCancel, haveCredit bool
	err := mpwire.WalkMap(body, func(key []byte, r *mpwire.Reader) error {
		switch string(key) {
		case "request_id":
			id, err := readID(r)
			req.ID, haveID = id, true
			return err
		case "payload":
			b, err := r.BinOrNil()
			if err == nil && b == nil {
				return fmt.Errorf("payload must be bin, found nil")
			}
			req.Payload, havePayload = b, true
			return err
		case "cancel":
			c, err := r.Byte()
			if err != nil {
				return err
			}
			if c != 0xc3 {
				return fmt.Errorf("cancel must be true, found %s", mpwire.TypeName(c))
			}
			req.Cancel, haveCancel = true, true
			return nil
		case "stream":
			n, err := readCredit(r)
			req.Stream = n
			return err
		case "credit":
			n, err := readCredit(r)
			req.Credit, haveCredit = n, true
			return err
		case "deadline_ms":
			ms, err := r.Uint()
			if err != nil {
				return fmt.Errorf("deadline_ms: %w", err)
			}
			// Zero, which no client writes, is a deadline already passed.
			req.Deadline = max(time.Duration(min(ms, maxDeadlineMS))*time.Millisecond, time.Nanosecond)
			return nil
		}
		return r.Skip()
	})
	switch {
	case err != nil:
		return Request{}, &EnvelopeError{Kind: "request", Reason: err.Error()}
	case !haveID:
		return Request{}, &EnvelopeError{Kind: "request", Reason: "request_id is missing"}
	case haveCancel && havePayload:
		return Request{}, &EnvelopeError{Kind: "request", Reason: "a cancel envelope has no payload"}
	case haveCredit && (havePayload || haveCancel):
		return Request{}, &EnvelopeError{Kind: "request", Reason: "a credit envelope has no payload and no cancel"}
	case haveCancel:
		return Request{ID: req.ID, Cancel: true}, nil
	case haveCredit:
		return Request{ID: req.ID, Credit: req.Credit}, nil
	case !havePayload:
		return Request{}, &EnvelopeError{Kind: "request", Reason: "payload is missing"}
	}
	return req, nil
}

// DecodeResponse decodes a response envelope, an item envelope (a body
// with an item key: Response.Item) or an end envelope (a body with an end
// key: Response.End) from a frame body. In a response an absent payload or
// error key counts as nil, as in the original's model.
func DecodeResponse(body []byte) (Response, error) {
	var resp Response
	var haveID, haveOther bool
	err := mpwire.WalkMap(body, func(key []byte, r *mpwire.Reader) error {
		var err error
		switch string(key) {
		case "request_id":
			resp.ID, err = readID(r)
			haveID = true
		case "payload":
			resp.Payload, err = r.BinOrNil()
			haveOther = true
		case "error":
			resp.Error, err = r.BinOrNil()
			haveOther = true
		case "item":
			resp.Item = true
			if resp.Payload, err = r.BinOrNil(); err == nil && resp.Payload == nil {
				err = fmt.Errorf("item must be bin, found nil")
			}
		case "end":
			var c byte
			if c, err = r.Byte(); err == nil && c != 0xc3 {
				err = fmt.Errorf("end must be true, found %s", mpwire.TypeName(c))
			}
			resp.End = true
		default:
			err = r.Skip()
		}
		return err
	})
	switch {
	case err != nil:
		return Response{}, &EnvelopeError{Kind: "response", Reason: err.Error()}
	case !haveID:
		return Response{}, &EnvelopeError{Kind: "response", Reason: "request_id is missing"}
	case resp.Item && (resp.End || haveOther):
		return Response{}, &EnvelopeError{Kind: "response", Reason: "an item envelope has no payload, error or end"}
	case resp.End && haveOther:
		return Response{}, &EnvelopeError{Kind: "response", Reason: "an end envelope has no payload or error"}
	case resp.Item || resp.End:
		return resp, nil
	case (resp.Payload == nil) == (resp.Error == nil):
		return Response{}, &EnvelopeError{Kind: "response", Reason: "exactly one of payload and error must be non-nil"}
	}
	return resp, nil
}

// readCredit reads an initial credit or a credit: an unsigned integer of
// at least 1.
func readCredit(r *mpwire.Reader) (int, error) {
	n, err := r.Uint()
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return 0, fmt.Errorf("must be at least 1")
	}
	return int(min(n, maxCredit)), nil
}

func readID(r *mpwire.Reader) (ID, error) {
	s, err := r.Str()
	if err != nil {
		return ID{}, err
	}
	u, err := uuid.ParseBytes(s)
	if err != nil {
		return ID{}, fmt.Errorf("not a UUID: %q", s)
	}
	return ID(u), nil
}
