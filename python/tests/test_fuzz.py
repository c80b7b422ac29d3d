"""Random and mutated input: decoders of outside bytes fail only in the
documented ways, and the fast request path agrees with the general one."""

import random

import msgpack
import pytest

from ociapp import EnvelopeError, FrameError, PayloadCodecError
from ociapp.payloads import decode_payload
from ociapp.protocol import (
    MAX_CREDIT,
    FrameDecoder,
    _unpack_envelope,
    decode_client_envelope,
    decode_request,
    decode_response,
    decode_server_envelope,
    encode_cancel,
    encode_credit,
    encode_end,
    encode_error,
    encode_item,
    encode_request,
    encode_response,
)

SEED_IDS = [
    "5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f",
    "00000000-0000-4000-8000-000000000000",
]
SEED_PAYLOADS = [
    msgpack.packb({"value": "hi"}),
    msgpack.packb({"value": "x" * 300, "n": [1, 2.5, None, True], "b": b"\x00"}, use_bin_type=True),
    msgpack.packb({}),
    b"\x80" * 70000,
]


def seeds() -> list[bytes]:
    bodies = [encode_request(i, p) for i in SEED_IDS for p in SEED_PAYLOADS]
    bodies.append(msgpack.packb({"payload": b"\x80", "request_id": SEED_IDS[0]}, use_bin_type=True))
    # The capabilities' envelopes: deadlines in every integer width, cancels.
    for deadline_ms in (0, 1, 30000, 2**32, 2**64 - 1):
        bodies.append(encode_request(SEED_IDS[0], SEED_PAYLOADS[0], deadline_ms))
    bodies.extend(encode_cancel(i) for i in SEED_IDS)
    bodies.append(msgpack.packb({"cancel": True, "request_id": SEED_IDS[1]}))
    # The stream capability's: initial credits (after a deadline, too),
    # credits, and what a server sends, items and ends.
    for credit in (1, 16, 300, 2**32, 2**64 - 1):
        bodies.append(encode_request(SEED_IDS[0], SEED_PAYLOADS[0], None, credit))
        bodies.append(encode_credit(SEED_IDS[1], credit))
    bodies.append(encode_request(SEED_IDS[0], SEED_PAYLOADS[0], 30000, 16))
    return bodies


def server_seeds() -> list[bytes]:
    return [
        encode_response(SEED_IDS[0], SEED_PAYLOADS[0], None),
        encode_response(SEED_IDS[0], None, encode_error("Boom", "boom")),
        encode_item(SEED_IDS[0], SEED_PAYLOADS[1]),
        encode_end(SEED_IDS[1]),
    ]


def mutations(rng: random.Random, body: bytes, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        data = bytearray(body[:200] if rng.random() < 0.5 else body)
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            position = rng.randrange(len(data) + 1)
            if action < 0.4 and data:
                data[min(position, len(data) - 1)] = rng.randrange(256)
            elif action < 0.7:
                data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
            else:
                del data[position : position + rng.randint(1, 3)]
        out.append(bytes(data))
    return out


def reference_decode(
    body: bytes,
) -> tuple[str, bytes | None, int | None, int | None, int | None]:
    # The rules, written plainly, for comparison with the decoder's paths.
    import uuid

    envelope = _unpack_envelope(body, "request")
    request_id = envelope["request_id"]
    if type(request_id) is not str:
        raise EnvelopeError("bad types")
    if "credit" in envelope:
        credit = envelope["credit"]
        assert "payload" not in envelope and "cancel" not in envelope
        assert type(credit) is int and credit >= 1
        return str(uuid.UUID(request_id)), None, None, None, min(credit, MAX_CREDIT)
    if "cancel" in envelope:
        assert envelope["cancel"] is True and "payload" not in envelope
        return str(uuid.UUID(request_id)), None, None, None, None
    payload = envelope["payload"]
    deadline_ms = envelope.get("deadline_ms")
    if type(payload) is not bytes:
        raise EnvelopeError("bad types")
    if "deadline_ms" in envelope:
        assert type(deadline_ms) is int and deadline_ms >= 0
    stream = envelope.get("stream")
    if "stream" in envelope:
        assert type(stream) is int and stream >= 1
        stream = min(stream, MAX_CREDIT)
    return str(uuid.UUID(request_id)), payload, deadline_ms, stream, None


@pytest.mark.parametrize("seed", range(4))
def test_mutated_requests(seed: int) -> None:
    rng = random.Random(seed)
    for body in seeds():
        for candidate in mutations(rng, body, 300):
            try:
                decoded = decode_client_envelope(candidate)
            except EnvelopeError:
                with pytest.raises(EnvelopeError):
                    decode_request(candidate)
                continue
            # Whatever the decoder accepts, on its fast path or not, the
            # rules read the same way.
            assert reference_decode(candidate) == decoded
            request_id, payload = decoded[:2]
            if payload is None:
                continue
            assert decode_request(candidate) == (request_id, payload)
            try:
                decode_payload(payload)
            except PayloadCodecError:
                pass


def reference_decode_server(
    body: bytes,
) -> tuple[str, bytes | None, bytes | None, bytes | None, bool]:
    import uuid

    envelope = _unpack_envelope(body, "response")
    request_id = str(uuid.UUID(envelope["request_id"]))
    if "item" in envelope:
        assert type(envelope["item"]) is bytes
        assert not {"payload", "error", "end"} & set(envelope)
        return request_id, None, None, envelope["item"], False
    if "end" in envelope:
        assert envelope["end"] is True and not {"payload", "error"} & set(envelope)
        return request_id, None, None, None, True
    payload, error = envelope.get("payload"), envelope.get("error")
    assert (payload is None) != (error is None)
    return request_id, payload, error, None, False


@pytest.mark.parametrize("seed", range(4))
def test_mutated_server_envelopes(seed: int) -> None:
    rng = random.Random(seed)
    for body in server_seeds():
        for candidate in mutations(rng, body, 300):
            try:
                decoded = decode_server_envelope(candidate)
            except EnvelopeError:
                continue
            assert reference_decode_server(candidate) == decoded
            if decoded[3] is None and not decoded[4]:
                assert decode_response(candidate) == decoded[:3]
            else:
                with pytest.raises(EnvelopeError):
                    decode_response(candidate)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        for decode, error in (
            (decode_client_envelope, EnvelopeError),
            (decode_request, EnvelopeError),
            (decode_server_envelope, EnvelopeError),
            (decode_payload, PayloadCodecError),
        ):
            try:
                decode(data)
            except error:
                pass
        decoder = FrameDecoder(64)
        try:
            for start in range(0, len(data), 3):
                for frame in decoder.feed(data[start : start + 3]):
                    assert 0 < len(frame) <= 64
            decoder.finish()
        except FrameError as exc:
            assert exc.fault in {"zero_length", "too_large", "truncated_header", "truncated_body"}
