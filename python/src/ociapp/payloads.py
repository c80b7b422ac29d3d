"""Payload codec: a request or response is a msgpack map with string keys."""

from typing import Any

import msgpack
from pydantic_core import to_jsonable_python

from .errors import PayloadCodecError

__all__ = ["decode_payload", "encode_payload"]

NOT_MSGPACK = "payload is not valid msgpack"
NOT_A_MAP = "payload must decode to a msgpack map"
KEYS_NOT_STRINGS = "payload keys must be strings"
NOT_SERIALIZABLE = "payload is not msgpack serializable"

# msgpack raises ValueError subclasses for malformed input, TypeError for
# unhashable map keys, and UnpackException subclasses for a few others.
UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)
PACK_ERRORS = (TypeError, ValueError, OverflowError)

_unpackb = msgpack.unpackb


def decode_payload(payload: bytes) -> dict[str, object]:
    """Decodes payload bytes into a dict, or raises PayloadCodecError.

    The checks run in the original's order (valid msgpack, a map, string
    keys), so each failure carries the original's message. Non-string keys
    are only checked at the top level; msgpack timestamps decode to aware
    datetimes so that they validate into datetime fields.
    """

    try:
        value = _unpackb(payload, raw=False, strict_map_key=False, timestamp=3)
    except UNPACK_ERRORS as exc:
        raise PayloadCodecError(_classify_unpack_failure(payload)) from exc
    if type(value) is not dict:
        raise PayloadCodecError(NOT_A_MAP)
    for key in value:
        if type(key) is not str:
            raise PayloadCodecError(KEYS_NOT_STRINGS)
    return value


class _Pairs(list):  # marks a decoded map in _classify_unpack_failure
    __slots__ = ()


def _classify_unpack_failure(payload: bytes) -> str:
    # Maps keyed by arrays or maps cannot become dicts. Decoding again with
    # maps as lists of pairs tells such valid msgpack apart from garbage, so
    # the message matches what a decoder without that limit would say.
    try:
        value = _unpackb(
            payload, raw=False, strict_map_key=False, object_pairs_hook=_Pairs, timestamp=3
        )
    except UNPACK_ERRORS:
        return NOT_MSGPACK
    if type(value) is not _Pairs:
        return NOT_A_MAP
    if any(type(key) is not str for key, _ in value):
        return KEYS_NOT_STRINGS
    return NOT_MSGPACK


def to_wire(value: Any) -> Any:
    """Converts a value msgpack cannot encode to its JSON-compatible form.

    Used as msgpack's ``default`` hook for response payloads: datetimes,
    UUIDs, decimals, enums, sets and the like become what pydantic's JSON
    mode makes of them, while bytes stay msgpack bin. Anything pydantic
    cannot serialize either raises, and the payload is reported as not
    serializable.
    """

    return to_jsonable_python(value)


def to_wire_lenient(value: Any) -> Any:
    """Like to_wire, but never fails: exceptions and unknown objects become strings.

    Used for error details, which must always reach the caller.
    """

    if isinstance(value, BaseException):
        return str(value)
    try:
        # serialize_unknown: objects pydantic knows nothing of become str(value).
        return to_jsonable_python(value, serialize_unknown=True)
    except Exception:
        return repr(value)


def encode_payload(payload: dict[str, object]) -> bytes:
    """Encodes a mapping as msgpack payload bytes, or raises PayloadCodecError."""

    try:
        return msgpack.packb(payload, use_bin_type=True, default=to_wire)
    except PACK_ERRORS as exc:
        raise PayloadCodecError(NOT_SERIALIZABLE) from exc
    except Exception as exc:  # pydantic's serialization errors for unknown types
        raise PayloadCodecError(NOT_SERIALIZABLE) from exc
