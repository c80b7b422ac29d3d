"""Frames and envelopes, and the original SDK's model-based API."""

import asyncio
import uuid

import msgpack
import pytest
from pydantic import ValidationError

from ociapp import (
    EnvelopeError,
    ErrorPayload,
    FrameDecoder,
    FrameError,
    ProtocolError,
    RequestEnvelope,
    ResponseEnvelope,
    decode_error_payload,
    decode_request_envelope,
    decode_response_envelope,
    encode_error_payload,
    encode_request_envelope,
    encode_response_envelope,
    pack_frame,
    read_frame,
    write_frame,
)
from ociapp.protocol import decode_request, encode_error, encode_request

ID = "5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f"


async def test_read_frame_round_trip() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(pack_frame(b"one") + pack_frame(b"two"))
    reader.feed_eof()
    assert await read_frame(reader) == b"one"
    assert await read_frame(reader) == b"two"
    assert await read_frame(reader) is None


async def test_read_frame_rejects_truncated_body() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data((5).to_bytes(4, "big") + b"abc")
    reader.feed_eof()
    with pytest.raises(ProtocolError, match="frame body"):
        await read_frame(reader)


async def test_read_frame_checks_the_limit_before_reading_the_body() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data((100).to_bytes(4, "big"))  # no body, no EOF: must not wait
    with pytest.raises(FrameError) as raised:
        await asyncio.wait_for(read_frame(reader, max_frame_size=10), 1)
    assert raised.value.fault == "too_large"


async def test_write_frame() -> None:
    class Sink:
        data = b""

        def write(self, data: bytes) -> None:
            self.data += data

        async def drain(self) -> None:
            pass

    sink = Sink()
    await write_frame(sink, b"abc")  # type: ignore[arg-type]
    assert sink.data == b"\x00\x00\x00\x03abc"


def test_pack_frame_rejects_an_empty_body() -> None:
    with pytest.raises(FrameError):
        pack_frame(b"")


def test_frame_decoder_handles_any_split() -> None:
    stream = pack_frame(b"a") + pack_frame(b"bc" * 300) + pack_frame(b"d")
    for size in (1, 2, 3, 5, 7, 64, len(stream)):
        decoder = FrameDecoder()
        frames = []
        for start in range(0, len(stream), size):
            frames.extend(decoder.feed(stream[start : start + size]))
        decoder.finish()
        assert frames == [b"a", b"bc" * 300, b"d"], size
        assert decoder.buffered == 0


def test_frame_decoder_limit_is_validated() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(0)


@pytest.mark.parametrize(
    "request_id",
    [
        ID.upper(),
        ID.replace("-", ""),
        "{" + ID + "}",
        "urn:uuid:" + ID,
    ],
)
def test_request_id_forms_python_and_go_accept(request_id: str) -> None:
    body = msgpack.packb({"request_id": request_id, "payload": b"\x80"}, use_bin_type=True)
    assert decode_request(body) == (ID, b"\x80")


@pytest.mark.parametrize(
    "envelope",
    [
        {"request_id": ID, "payload": b"\x80", "extra": 1},
        {"payload": b"\x80", "request_id": ID},
        {"request_id": ID, "payload": b"\x80" * 300},  # bin16
        {"request_id": ID, "payload": b"\x80" * 70000},  # bin32
    ],
    ids=["unknown-key", "key-order", "bin16", "bin32"],
)
def test_request_layouts(envelope: dict) -> None:
    body = msgpack.packb(envelope, use_bin_type=True)
    assert decode_request(body) == (ID, envelope["payload"])


@pytest.mark.parametrize("cut", [1, 5, 60])
def test_truncated_request_is_rejected(cut: int) -> None:
    body = encode_request(ID, b"\x81\xa1a\x01")
    with pytest.raises(EnvelopeError):
        decode_request(body[:-cut])
    with pytest.raises(EnvelopeError):
        decode_request(body + b"\x00")


def test_duplicate_keys_are_rejected() -> None:
    body = (
        b"\x83"
        + msgpack.packb("request_id")
        + msgpack.packb(ID)
        + msgpack.packb("payload")
        + msgpack.packb(b"\x80", use_bin_type=True)
        + msgpack.packb("payload")
        + msgpack.packb(b"\x80", use_bin_type=True)
    )
    with pytest.raises(EnvelopeError, match="duplicate"):
        decode_request(body)


def test_non_string_envelope_keys_are_rejected() -> None:
    body = msgpack.packb(
        {"request_id": ID, "payload": b"\x80", b"x": 1}, use_bin_type=True
    )
    with pytest.raises(EnvelopeError, match="keys must be strings"):
        decode_request(body)


def test_request_envelope_round_trip() -> None:
    request_id = uuid.uuid4()
    encoded = encode_request_envelope(RequestEnvelope(request_id=request_id, payload=b"abc"))
    assert decode_request_envelope(encoded) == RequestEnvelope(request_id=request_id, payload=b"abc")
    assert encoded == encode_request(str(request_id), b"abc")


def test_response_envelope_round_trip() -> None:
    request_id = uuid.uuid4()
    envelope = ResponseEnvelope(request_id=request_id, payload=b"abc", error=None)
    assert decode_response_envelope(encode_response_envelope(envelope)) == envelope


@pytest.mark.parametrize(("payload", "error"), [(None, None), (b"abc", b"boom")])
def test_response_envelope_needs_exactly_one_of_payload_and_error(
    payload: bytes | None, error: bytes | None
) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ResponseEnvelope(request_id=uuid.uuid4(), payload=payload, error=error)


def test_error_payload_round_trip() -> None:
    error = ErrorPayload(error_type="BoomError", message="bad request", details={"retryable": False})
    assert decode_error_payload(encode_error_payload(error)) == error


def test_decode_request_envelope_rejects_an_invalid_request_id() -> None:
    with pytest.raises(ProtocolError, match="valid UUID"):
        decode_request_envelope(
            msgpack.packb({"request_id": "not-a-uuid", "payload": b"abc"}, use_bin_type=True)
        )


@pytest.mark.parametrize(
    ("envelope", "pattern"),
    [
        ({"request_id": ID}, "exactly one"),
        ({"request_id": ID, "payload": "abc", "error": None}, "bytes or null"),
    ],
)
def test_decode_response_envelope_failures(envelope: dict, pattern: str) -> None:
    with pytest.raises(ProtocolError, match=pattern):
        decode_response_envelope(msgpack.packb(envelope, use_bin_type=True))


def test_decode_error_payload_failure() -> None:
    with pytest.raises(ProtocolError, match="message"):
        decode_error_payload(msgpack.packb({"error_type": "BoomError", "message": 123}))


def test_error_details_are_always_encodable() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    details = {
        "error": ValueError("bad value"),
        "opaque": Opaque(),
        "huge": 2**80,
        "nested": [{"when": __import__("datetime").date(2026, 11, 26)}],
    }
    decoded = msgpack.unpackb(encode_error("E", "m", details), raw=False)
    assert decoded == {
        "error_type": "E",
        "message": "m",
        "details": {
            "error": "bad value",
            "opaque": "<opaque>",
            "huge": str(2**80),
            "nested": [{"when": "2026-11-26"}],
        },
    }
    assert list(decoded) == ["error_type", "message", "details"]
