"""Wire protocol v1: length-prefixed frames carrying msgpack envelopes.

A frame is a 4-byte big-endian length N (0 < N <= the maximum frame size)
followed by N bytes of body. A request body is the msgpack map
``{"request_id": <uuid str>, "payload": <bin>}``, with a third key
``"deadline_ms": <uint>`` under the deadline capability and a last key
``"stream": <uint >= 1>`` (the initial credit) under the stream capability; a
cancel body (the cancel capability) is
``{"request_id": <uuid str>, "cancel": true}`` and a credit body (the stream
capability) ``{"request_id": <uuid str>, "credit": <uint >= 1>}``. A response
body is
``{"request_id": <uuid str>, "payload": <bin|nil>, "error": <bin|nil>}`` with
exactly one of payload and error set; a stream's items come in item bodies,
``{"request_id": <uuid str>, "item": <bin>}``, and its successful end in an
end body, ``{"request_id": <uuid str>, "end": true}``. An error is the
msgpack map ``{"error_type": <str>, "message": <str>, "details": <any>}``.

The model-based functions (``encode_request_envelope`` and friends) keep the
original SDK's API; the server uses the tuple-based ones, which skip model
construction.
"""

import asyncio
import re
import uuid
from typing import Any

import msgpack
from pydantic import ValidationError

from .errors import EnvelopeError, ErrorPayload, FrameError, ProtocolError
from .models import RequestEnvelope, ResponseEnvelope
from .payloads import UNPACK_ERRORS, to_wire_lenient

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_SOCKET_PATH",
    "FRAME_HEADER_SIZE",
    "SOCKET_PATH",
    "ErrorPayload",
    "FrameDecoder",
    "ProtocolError",
    "RequestEnvelope",
    "ResponseEnvelope",
    "decode_client_envelope",
    "decode_error",
    "decode_error_payload",
    "decode_request",
    "decode_request_envelope",
    "decode_response",
    "decode_response_envelope",
    "decode_server_envelope",
    "encode_cancel",
    "encode_credit",
    "encode_end",
    "encode_error",
    "encode_error_payload",
    "encode_item",
    "encode_request",
    "encode_request_envelope",
    "encode_response",
    "encode_response_envelope",
    "pack_frame",
    "read_frame",
    "write_frame",
]

DEFAULT_SOCKET_PATH = "/run/ociapp/app.sock"
SOCKET_PATH = DEFAULT_SOCKET_PATH  # the name a later original release used
FRAME_HEADER_SIZE = 4
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
MAX_FRAME_LENGTH = 0xFFFFFFFF
# The most credit one envelope is read as carrying (as the Go decoder
# reads it): a larger value counts as this much.
MAX_CREDIT = 1 << 30

ZERO_LENGTH = "zero_length"
TRUNCATED_HEADER = "truncated_header"
TRUNCATED_BODY = "truncated_body"
TOO_LARGE = "too_large"

_unpackb = msgpack.unpackb
_packb = msgpack.packb


# Frames.


def _length_error(length: int, max_frame_size: int) -> FrameError | None:
    if length == 0:
        return FrameError("frame length must be positive (got 0)", fault=ZERO_LENGTH)
    if length > max_frame_size:
        return FrameError(
            f"frame length {length} exceeds the maximum of {max_frame_size} bytes",
            fault=TOO_LARGE,
        )
    return None


def pack_frame(payload: bytes) -> bytes:
    """Prefixes a frame body with its length header."""

    length = len(payload)
    if not length:
        raise FrameError("frame payload must not be empty", fault=ZERO_LENGTH)
    if length > MAX_FRAME_LENGTH:
        raise FrameError(
            f"frame payload of {length} bytes does not fit a 4-byte length", fault=TOO_LARGE
        )
    return length.to_bytes(4, "big") + payload


async def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    """Writes one frame to a stream and waits for the write buffer to drain."""

    writer.write(pack_frame(payload))
    await writer.drain()


async def read_frame(
    reader: asyncio.StreamReader, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes | None:
    """Reads one frame body from a stream.

    Returns None on a clean end of stream (before a header's first byte);
    raises FrameError for a truncated header or body, a zero length, or a
    length above max_frame_size (checked before the body is read).
    """

    try:
        header = await reader.readexactly(FRAME_HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError(
            "unexpected EOF while reading frame header", fault=TRUNCATED_HEADER
        ) from exc
    length = int.from_bytes(header, "big")
    error = _length_error(length, max_frame_size)
    if error is not None:
        raise error
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(
            f"unexpected EOF while reading frame body ({len(exc.partial)} of {length} bytes)",
            fault=TRUNCATED_BODY,
        ) from exc


class FrameDecoder:
    """Splits a byte stream into frame bodies, however the bytes arrive.

    ``feed`` returns every frame completed by the new data (many per socket
    read under load); ``finish`` checks that the stream did not end inside a
    frame. Both raise FrameError, after which the stream cannot be resumed.
    """

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= MAX_FRAME_LENGTH:
            raise ValueError(f"max_frame_size must be in 1..{MAX_FRAME_LENGTH}")
        self._buffer = bytearray()
        self._max = max_frame_size

    @property
    def buffered(self) -> int:
        """Returns how many bytes of an incomplete frame are held."""

        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Adds data and returns the bodies of the frames it completes."""

        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            # The common case at low load: the read holds exactly one frame.
            if len(data) > 4 and 0 < (length := int.from_bytes(data[:4], "big")) <= self._max:
                if len(data) == length + 4:
                    return [data[4:]]
            view = data
        frames = []
        end = len(view)
        pos = 0
        limit = self._max
        while end - pos >= 4:
            length = int.from_bytes(view[pos : pos + 4], "big")
            if not 0 < length <= limit:
                raise _length_error(length, limit)  # type: ignore[misc]
            stop = pos + 4 + length
            if stop > end:
                break
            frames.append(bytes(view[pos + 4 : stop]) if buffer else view[pos + 4 : stop])
            pos = stop
        if buffer:
            del buffer[:pos]
        elif pos < end:
            buffer += view[pos:]
        return frames

    def finish(self) -> None:
        """Raises FrameError when the stream ended inside a frame."""

        held = len(self._buffer)
        if not held:
            return
        if held < 4:
            raise FrameError(
                "unexpected EOF while reading frame header", fault=TRUNCATED_HEADER
            )
        length = int.from_bytes(self._buffer[:4], "big")
        raise FrameError(
            f"unexpected EOF while reading frame body ({held - 4} of {length} bytes)",
            fault=TRUNCATED_BODY,
        )


# Envelopes.

_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
).fullmatch
# The forms Python's uuid.UUID and Go's uuid.Parse both accept.
_ANY_UUID = re.compile(
    r"(?:(?:urn:uuid:)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"|\{([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\}"
    r"|([0-9a-f]{32}))",
    re.IGNORECASE,
).fullmatch


def _canonical_request_id(value: object, kind: str) -> str:
    if type(value) is not str:
        raise EnvelopeError(
            f"{kind} envelope is invalid: request_id must be a string, "
            f"not {_type_name(value)}"
        )
    if _CANONICAL_UUID(value):
        return value
    match = _ANY_UUID(value)
    if match is None:
        raise EnvelopeError(
            f"{kind} envelope is invalid: request_id {value[:64]!r} is not a valid UUID"
        )
    return str(uuid.UUID(next(group for group in match.groups() if group)))


def _type_name(value: object) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bytes):
        return "bin"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def _map_length(body: bytes) -> int:
    # Only called on bodies that decoded to a dict, so the header is a map's.
    first = body[0]
    if first & 0xF0 == 0x80:
        return first & 0x0F
    if first == 0xDE:
        return int.from_bytes(body[1:3], "big")
    return int.from_bytes(body[1:5], "big")


def _unpack_envelope(body: bytes, kind: str) -> dict[Any, Any]:
    try:
        value = _unpackb(body, raw=False)
    except UNPACK_ERRORS as exc:
        raise EnvelopeError(f"{kind} envelope must be valid msgpack") from exc
    if type(value) is not dict:
        raise EnvelopeError(f"{kind} envelope must be a msgpack map")
    if len(value) != _map_length(body):
        raise EnvelopeError(f"{kind} envelope is invalid: duplicate keys")
    for key in value:
        if type(key) is not str:
            raise EnvelopeError(f"{kind} envelope is invalid: keys must be strings")
    return value


# How every encoder lays out a request: a 2-entry map, "request_id" with a
# 36-byte str8 value, then "payload" with a bin value.
_REQUEST_HEAD = b"\x82\xaarequest_id\xd9\x24"
_PAYLOAD_KEY = b"\xa7payload"
_CANONICAL_UUID_BYTES = re.compile(
    rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
).fullmatch


def decode_client_envelope(
    body: bytes,
) -> tuple[str, bytes | None, int | None, int | None, int | None]:
    """Decodes what a client sends a server: a request, cancel or credit
    envelope, as (request_id, payload, deadline_ms, stream, credit).

    A request has its payload, deadline_ms (None when the request has none)
    and stream, its initial credit (None unless it asks for a stream); a
    cancel envelope gives (request_id, None, None, None, None) and a credit
    envelope (request_id, None, None, None, credit). Credits above
    MAX_CREDIT are read as MAX_CREDIT. The request id comes back in
    canonical form. Unknown keys are ignored, as the original's envelope
    model ignored them; anything else out of shape raises EnvelopeError.
    """

    # Fast path: the usual layout is read in place, without building a dict.
    if len(body) > 59 and body.startswith(_REQUEST_HEAD) and body.startswith(_PAYLOAD_KEY, 50):
        marker = body[58]
        if marker == 0xC4:
            start, size = 60, body[59]
        elif marker == 0xC5:
            start, size = 61, int.from_bytes(body[59:61], "big")
        elif marker == 0xC6:
            start, size = 63, int.from_bytes(body[59:63], "big")
        else:
            start, size = 0, -1
        if size == len(body) - start and _CANONICAL_UUID_BYTES(body, 14, 50):
            return body[14:50].decode("ascii"), body[start:], None, None, None
    envelope = _unpack_envelope(body, "request")
    if "credit" in envelope:
        return _decode_credit(envelope)
    if "cancel" in envelope:
        return _decode_cancel(envelope), None, None, None, None
    if "request_id" not in envelope:
        raise EnvelopeError("request envelope is invalid: request_id is missing")
    if "payload" not in envelope:
        raise EnvelopeError("request envelope is invalid: payload is missing")
    request_id = _canonical_request_id(envelope["request_id"], "request")
    payload = envelope["payload"]
    if type(payload) is not bytes:
        raise EnvelopeError(
            f"request envelope is invalid: payload must be bin, not {_type_name(payload)}"
        )
    deadline_ms = None
    if "deadline_ms" in envelope:
        deadline_ms = envelope["deadline_ms"]
        if type(deadline_ms) is not int:
            raise EnvelopeError(
                "request envelope is invalid: deadline_ms must be an integer, "
                f"not {_type_name(deadline_ms)}"
            )
        if deadline_ms < 0:
            raise EnvelopeError(
                "request envelope is invalid: deadline_ms must not be negative "
                f"(got {deadline_ms})"
            )
    stream = None
    if "stream" in envelope:
        stream = _read_credit(envelope["stream"], "request", "stream")
    return request_id, payload, deadline_ms, stream, None


def _read_credit(value: object, kind: str, name: str) -> int:
    # An initial credit or a credit: an unsigned integer of at least 1. The
    # reasons are the Go decoder's faults ("credit: must be at least 1").
    if type(value) is not int:
        raise EnvelopeError(
            f"{kind} envelope is invalid: {name}: must be an integer, not {_type_name(value)}"
        )
    if value < 0:
        raise EnvelopeError(
            f"{kind} envelope is invalid: {name}: must not be negative (got {value})"
        )
    if value == 0:
        raise EnvelopeError(f"{kind} envelope is invalid: {name}: must be at least 1 (got 0)")
    return min(value, MAX_CREDIT)


def _decode_credit(
    envelope: dict[str, Any],
) -> tuple[str, None, None, None, int]:
    if "payload" in envelope or "cancel" in envelope:
        raise EnvelopeError(
            "credit envelope is invalid: a credit envelope has no payload and no cancel "
            "(it names a stream and how many more items it may send)"
        )
    credit = _read_credit(envelope["credit"], "credit", "credit")
    if "request_id" not in envelope:
        raise EnvelopeError("credit envelope is invalid: request_id is missing")
    return _canonical_request_id(envelope["request_id"], "credit"), None, None, None, credit


def _decode_cancel(envelope: dict[str, Any]) -> str:
    if envelope["cancel"] is not True:
        raise EnvelopeError(
            "cancel envelope is invalid: cancel must be true, "
            f"not {_type_name(envelope['cancel'])} {envelope['cancel']!r:.64}"
        )
    if "payload" in envelope:
        raise EnvelopeError(
            "cancel envelope is invalid: it has a payload (a body with a cancel key "
            "is a cancel envelope, which names a request and carries no payload)"
        )
    if "request_id" not in envelope:
        raise EnvelopeError("cancel envelope is invalid: request_id is missing")
    return _canonical_request_id(envelope["request_id"], "cancel")


def decode_request(body: bytes) -> tuple[str, bytes]:
    """Decodes a request envelope into (request_id, payload).

    As decode_client_envelope, but only for requests: deadline_ms and stream
    are checked and dropped, and a cancel or credit envelope raises
    EnvelopeError.
    """

    request_id, payload, _, _, credit = decode_client_envelope(body)
    if payload is None:
        kind = "cancel" if credit is None else "credit"
        raise EnvelopeError(f"request envelope is invalid: it is a {kind} envelope")
    return request_id, payload


def decode_response(body: bytes) -> tuple[str, bytes | None, bytes | None]:
    """Decodes a response envelope into (request_id, payload, error).

    An absent payload or error key counts as nil; exactly one of them must be
    non-nil. An item or end envelope raises EnvelopeError.
    """

    request_id, payload, error, item, end = decode_server_envelope(body)
    if item is not None or end:
        kind = "an item" if item is not None else "an end"
        raise EnvelopeError(f"response envelope is invalid: it is {kind} envelope")
    return request_id, payload, error


def decode_server_envelope(
    body: bytes,
) -> tuple[str, bytes | None, bytes | None, bytes | None, bool]:
    """Decodes what a server sends a client: a response, item or end
    envelope, as (request_id, payload, error, item, end).

    A response has exactly one of payload and error (an absent key counts as
    nil), item None and end False; an item envelope gives
    (request_id, None, None, item, False), an end envelope
    (request_id, None, None, None, True).
    """

    envelope = _unpack_envelope(body, "response")
    if "request_id" not in envelope:
        raise EnvelopeError("response envelope is invalid: request_id is missing")
    if "item" in envelope:
        item = envelope["item"]
        if type(item) is not bytes:
            raise EnvelopeError(
                f"item envelope is invalid: item must be bin, found {_type_name(item)}"
            )
        if "payload" in envelope or "error" in envelope or "end" in envelope:
            raise EnvelopeError(
                "item envelope is invalid: an item envelope has no payload, error or end"
            )
        return _canonical_request_id(envelope["request_id"], "item"), None, None, item, False
    if "end" in envelope:
        if envelope["end"] is not True:
            raise EnvelopeError(
                "end envelope is invalid: end must be true, "
                f"not {_type_name(envelope['end'])} {envelope['end']!r:.64}"
            )
        if "payload" in envelope or "error" in envelope:
            raise EnvelopeError(
                "end envelope is invalid: an end envelope has no payload or error"
            )
        return _canonical_request_id(envelope["request_id"], "end"), None, None, None, True
    request_id = _canonical_request_id(envelope["request_id"], "response")
    payload = envelope.get("payload")
    error = envelope.get("error")
    for name, value in (("payload", payload), ("error", error)):
        if value is not None and type(value) is not bytes:
            raise EnvelopeError(
                f"response envelope is invalid: {name} must be bytes or null "
                f"(msgpack bin or nil), not {_type_name(value)}"
            )
    if (payload is None) == (error is None):
        raise EnvelopeError(
            "response envelope is invalid: exactly one of payload and error must be non-nil"
        )
    return request_id, payload, error, None, False


def encode_request(
    request_id: str, payload: bytes, deadline_ms: int | None = None, stream: int | None = None
) -> bytes:
    """Encodes a request envelope body, with deadline_ms and stream (the
    initial credit) when they are not None."""

    envelope: dict[str, object] = {"request_id": request_id, "payload": payload}
    if deadline_ms is not None:
        envelope["deadline_ms"] = deadline_ms
    if stream is not None:
        envelope["stream"] = stream
    return _packb(envelope, use_bin_type=True)


def encode_cancel(request_id: str) -> bytes:
    """Encodes a cancel envelope body."""

    return _packb({"request_id": request_id, "cancel": True}, use_bin_type=True)


def encode_credit(request_id: str, credit: int) -> bytes:
    """Encodes a credit envelope body."""

    return _packb({"request_id": request_id, "credit": credit}, use_bin_type=True)


def encode_item(request_id: str, item: bytes) -> bytes:
    """Encodes an item envelope body; item is the msgpack map of one item."""

    return _packb({"request_id": request_id, "item": item}, use_bin_type=True)


def encode_end(request_id: str) -> bytes:
    """Encodes an end envelope body."""

    return _packb({"request_id": request_id, "end": True}, use_bin_type=True)


def encode_response(request_id: str, payload: bytes | None, error: bytes | None) -> bytes:
    """Encodes a response envelope body."""

    return _packb(
        {"request_id": request_id, "payload": payload, "error": error}, use_bin_type=True
    )


def encode_error(error_type: str, message: str, details: object = None) -> bytes:
    """Encodes an error map.

    Details that msgpack cannot encode as they are (exception objects in
    pydantic's error context, datetimes, arbitrary objects) are converted to
    their JSON-compatible or string form, so the error always reaches the
    caller.
    """

    error = {"error_type": error_type, "message": message, "details": details}
    try:
        return _packb(error, use_bin_type=True, default=to_wire_lenient)
    except (TypeError, ValueError, OverflowError):
        # Integers beyond 64 bits are the one thing the hook never sees.
        error["details"] = _stringify_large_ints(details)
        return _packb(error, use_bin_type=True, default=to_wire_lenient)


def _stringify_large_ints(value: object) -> object:
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {key: _stringify_large_ints(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stringify_large_ints(item) for item in value]
    return value


def decode_error(body: bytes) -> ErrorPayload:
    """Decodes an error map."""

    try:
        value = _unpackb(body, raw=False, strict_map_key=False)
    except UNPACK_ERRORS as exc:
        raise EnvelopeError("error payload must be valid msgpack") from exc
    if type(value) is not dict:
        raise EnvelopeError("error payload must be a msgpack map")
    try:
        return ErrorPayload.model_validate(value)
    except ValidationError as exc:
        raise _invalid("error payload", exc) from exc


# The original SDK's model-based API.


def encode_request_envelope(envelope: RequestEnvelope) -> bytes:
    """Serializes a request envelope model."""

    return encode_request(str(envelope.request_id), envelope.payload)


def decode_request_envelope(payload: bytes) -> RequestEnvelope:
    """Deserializes a request envelope model; raises ProtocolError."""

    request_id, body = decode_request(payload)
    return RequestEnvelope.model_construct(request_id=uuid.UUID(request_id), payload=body)


def encode_response_envelope(envelope: ResponseEnvelope) -> bytes:
    """Serializes a response envelope model."""

    return encode_response(str(envelope.request_id), envelope.payload, envelope.error)


def decode_response_envelope(payload: bytes) -> ResponseEnvelope:
    """Deserializes a response envelope model; raises ProtocolError."""

    request_id, body, error = decode_response(payload)
    return ResponseEnvelope.model_construct(
        request_id=uuid.UUID(request_id), payload=body, error=error
    )


def encode_error_payload(error: ErrorPayload) -> bytes:
    """Serializes an error payload model."""

    return encode_error(error.error_type, error.message, error.details)


def decode_error_payload(payload: bytes) -> ErrorPayload:
    """Deserializes an error payload model; raises ProtocolError."""

    return decode_error(payload)


def _invalid(label: str, error: ValidationError) -> EnvelopeError:
    problems = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"])
        problems.append(f"{location}: {item['msg']}" if location else item["msg"])
    return EnvelopeError(f"{label} is invalid: {'; '.join(problems)}")
