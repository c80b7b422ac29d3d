"""The shared conformance vectors: the Python codec and server must agree
byte for byte with the Go protocol package."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import RawClient, serving

from apps.sample import app as echo_app
from apps.sample import failing_app
from ociapp import EnvelopeError, FrameError, PayloadCodecError
from ociapp.payloads import decode_payload, encode_payload
from ociapp.protocol import (
    FrameDecoder,
    decode_error,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    pack_frame,
    read_frame,
)


def body_of(frame_hex: str) -> bytes:
    frame = bytes.fromhex(frame_hex)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return frame[4:]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # One test case per vector, named after it.
    import json

    from conftest import VECTORS as path
    data = json.loads(path.read_text()) if path.is_file() else {}
    names = ("valid", "malformed_frames", "malformed_envelopes", "bad_payloads")
    groups = {group: data.get(group) or [] for group in names}
    # A server reads only requests: response-kind envelopes go to the decoder alone.
    groups["malformed_requests"] = [
        case for case in groups["malformed_envelopes"] if case["kind"] == "request"
    ]
    for group, cases in groups.items():
        if group in metafunc.fixturenames:
            if not cases:
                pytest.fail(f"no {group} vectors in {path}")
            metafunc.parametrize(group, cases, ids=[case["name"] for case in cases])


def test_vector_file_has_every_group(vectors: dict[str, Any]) -> None:
    for group in ("valid", "malformed_frames", "malformed_envelopes", "bad_payloads"):
        assert vectors[group], group


def test_valid_vector_decodes_and_reencodes(valid: dict[str, Any]) -> None:
    frame = bytes.fromhex(valid["frame"])
    body = body_of(valid["frame"])
    if valid["kind"] == "request":
        request_id, payload = decode_request(body)
        assert request_id == valid["request_id"]
        assert decode_payload(payload) == valid["payload"]
        assert pack_frame(encode_request(request_id, encode_payload(valid["payload"]))) == frame
        return

    request_id, payload, error = decode_response(body)
    assert request_id == valid["request_id"]
    if valid["payload"] is None:
        assert payload is None
    else:
        assert decode_payload(payload) == valid["payload"]
    if valid["error"] is None:
        assert error is None
    else:
        decoded = decode_error(error)
        assert decoded.error_type == valid["error"]["error_type"]
        assert decoded.message == valid["error"]["message"]
        assert decoded.details == valid["error"]["details"]
    reencoded = encode_response(
        request_id,
        None if valid["payload"] is None else encode_payload(valid["payload"]),
        None if valid["error"] is None else encode_error(**valid["error"]),
    )
    assert pack_frame(reencoded) == frame


async def test_malformed_frame_is_rejected_by_the_readers(
    malformed_frames: dict[str, Any],
) -> None:
    data = bytes.fromhex(malformed_frames["bytes"])
    limit = malformed_frames.get("max_frame_size", 16 * 1024 * 1024)

    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    with pytest.raises(FrameError) as raised:
        await read_frame(reader, max_frame_size=limit)
    assert raised.value.fault == malformed_frames["fault"]

    # The incremental decoder the server uses, fed one byte at a time.
    decoder = FrameDecoder(limit)
    with pytest.raises(FrameError) as raised:
        for index in range(len(data)):
            assert decoder.feed(data[index : index + 1]) == []
        decoder.finish()
    assert raised.value.fault == malformed_frames["fault"]


async def test_malformed_frame_closes_a_live_connection(
    malformed_frames: dict[str, Any], short_tmp: Path
) -> None:
    options = {}
    if "max_frame_size" in malformed_frames:
        options["max_frame_size"] = malformed_frames["max_frame_size"]
    async with serving(echo_app, short_tmp, **options) as server:
        client = await RawClient.connect(server.socket_path)
        client.send_bytes(bytes.fromhex(malformed_frames["bytes"]))
        if malformed_frames["fault"].startswith("truncated"):
            client.writer.write_eof()  # the stream ends inside the frame
        assert await client.closed_by_server()
        await client.close()


def test_malformed_envelope_is_rejected_by_the_decoder(
    malformed_envelopes: dict[str, Any],
) -> None:
    body = body_of(malformed_envelopes["frame"])
    decode = decode_request if malformed_envelopes["kind"] == "request" else decode_response
    with pytest.raises(EnvelopeError):
        decode(body)


async def test_malformed_request_envelope_closes_a_live_connection(
    malformed_requests: dict[str, Any], short_tmp: Path
) -> None:
    async with serving(echo_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        assert (await client.call({"value": "before"})).payload == {"value": "before"}
        client.send_bytes(bytes.fromhex(malformed_requests["frame"]))
        assert await client.closed_by_server()
        await client.close()


def test_bad_payload_message(bad_payloads: dict[str, Any]) -> None:
    with pytest.raises(PayloadCodecError) as raised:
        decode_payload(bytes.fromhex(bad_payloads["payload"]))
    assert str(raised.value) == bad_payloads["message"]


async def test_bad_payload_reaches_the_caller_as_payload_codec_error(
    bad_payloads: dict[str, Any], short_tmp: Path
) -> None:
    async with serving(echo_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = client.send(bytes.fromhex(bad_payloads["payload"]), raw=True)
        response = await client.receive()
        assert response.request_id == request_id
        assert response.payload is None
        assert response.error.error_type == "PayloadCodecError"
        assert response.error.message == bad_payloads["message"]
        assert response.error.details is None
        await client.close()


def vector(vectors: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in vectors["valid"] if v["name"] == name)


async def test_server_answers_with_the_vector_bytes(
    vectors: dict[str, Any], short_tmp: Path
) -> None:
    """A live server's responses are byte-identical to the Go-made vectors."""

    request = vector(vectors, "request_echo")
    cases = [
        (echo_app, bytes.fromhex(request["frame"]), "response_success"),
        (failing_app, bytes.fromhex(request["frame"]), "response_app_error"),
        (
            echo_app,
            pack_frame(encode_request(request["request_id"], bytes.fromhex("920102"))),
            "response_payload_codec_error",
        ),
    ]
    for app, frame, expected in cases:
        directory = short_tmp / expected
        directory.mkdir()
        async with serving(app, directory) as server:
            reader, writer = await asyncio.open_unix_connection(str(server.socket_path))
            writer.write(frame)
            want = bytes.fromhex(vector(vectors, expected)["frame"])
            got = await asyncio.wait_for(reader.readexactly(len(want)), 5)
            assert got == want, expected
            writer.close()
