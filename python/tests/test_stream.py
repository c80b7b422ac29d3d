"""The protocol's stream capability: its envelopes (the shared vectors'
group "stream"), stream handlers called directly, and streams served over
real sockets under the client's credit."""

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import REPO, TESTS, VECTORS, RawClient, Response, serving

from apps import sample, streaming
from ociapp import Application, ApplicationLoadError, EnvelopeError, load_application
from ociapp.payloads import decode_payload, encode_payload
from ociapp.protocol import (
    MAX_CREDIT,
    decode_client_envelope,
    decode_request,
    decode_response,
    decode_server_envelope,
    encode_cancel,
    encode_credit,
    encode_end,
    encode_item,
    encode_request,
    pack_frame,
)
from ociapp import server as server_module
from ociapp.server import STREAM_REQUIRED_MESSAGE, VALIDATION_MESSAGE

REQUEST_ID = "5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f"
CLIENT_KINDS = ("request", "credit")


def body_of(frame: bytes) -> bytes:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return frame[4:]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    data = json.loads(VECTORS.read_text()) if VECTORS.is_file() else {}
    cases = data.get("stream") or []
    for fixture, chosen in (
        ("stream_valid", [c for c in cases if "fault" not in c]),
        ("stream_malformed", [c for c in cases if "fault" in c]),
        ("stream_malformed_client", [c for c in cases if "fault" in c and c["kind"] in CLIENT_KINDS]),
    ):
        if fixture in metafunc.fixturenames:
            if not chosen:
                pytest.fail(f"no {fixture} vectors in group stream of {VECTORS}")
            metafunc.parametrize(fixture, chosen, ids=[case["name"] for case in chosen])


# Envelopes


def test_stream_group_has_every_kind(vectors: dict[str, Any]) -> None:
    kinds = {case["kind"] for case in vectors["stream"]}
    assert kinds == {"request", "credit", "item", "end"}


def test_stream_vector_decodes_and_reencodes(stream_valid: dict[str, Any]) -> None:
    case = stream_valid
    frame = bytes.fromhex(case["frame"])
    body = body_of(frame)
    kind = case["kind"]
    if kind == "request":
        request_id, payload, deadline_ms, stream, credit = decode_client_envelope(body)
        assert (request_id, stream, credit) == (case["request_id"], case["stream"], None)
        assert decode_payload(payload) == case["payload"]
        assert pack_frame(encode_request(request_id, payload, deadline_ms, stream)) == frame
        # The two-value decoder reads the request and drops the rest.
        assert decode_request(body) == (request_id, payload)
    elif kind == "credit":
        assert decode_client_envelope(body) == (case["request_id"], None, None, None, case["credit"])
        assert pack_frame(encode_credit(case["request_id"], case["credit"])) == frame
        with pytest.raises(EnvelopeError, match="it is a credit envelope"):
            decode_request(body)
    elif kind == "item":
        request_id, payload, error, item, end = decode_server_envelope(body)
        assert (request_id, payload, error, end) == (case["request_id"], None, None, False)
        assert decode_payload(item) == case["payload"]
        assert pack_frame(encode_item(request_id, item)) == frame
        with pytest.raises(EnvelopeError, match="it is an item envelope"):
            decode_response(body)
    else:
        assert decode_server_envelope(body) == (case["request_id"], None, None, None, True)
        assert pack_frame(encode_end(case["request_id"])) == frame
        with pytest.raises(EnvelopeError, match="it is an end envelope"):
            decode_response(body)


def test_stream_request_of_the_spec() -> None:
    # docs/protocol.md's bytes: length 78, a map of 3, "stream" 16 last.
    frame = pack_frame(encode_request(REQUEST_ID, encode_payload({"value": "hi"}), None, 16))
    assert frame[:5] == b"\x00\x00\x00\x4e\x83"
    assert frame.endswith(b"\xa6stream\x10")


def test_malformed_stream_vector_is_rejected(stream_malformed: dict[str, Any]) -> None:
    case = stream_malformed
    body = body_of(bytes.fromhex(case["frame"]))
    if case["kind"] in CLIENT_KINDS:
        decoders = (decode_client_envelope, decode_request)
    else:
        decoders = (decode_server_envelope, decode_response)
    for decode in decoders:
        with pytest.raises(EnvelopeError) as raised:
            decode(body)
        # The Go decoder's fault, word for word.
        assert case["fault"] in str(raised.value)


async def test_malformed_stream_vector_closes_a_live_connection(
    stream_malformed_client: dict[str, Any], short_tmp: Path
) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = client.send({"count": -1}, stream=1)
        assert (await client.receive()).item == {"i": 0, "pad": ""}
        client.send_bytes(bytes.fromhex(stream_malformed_client["frame"]))
        assert await client.closed_by_server()
        # The stream's handler is closed with the connection.
        await asyncio.wait_for(app.closed.wait(), 5)
        assert request_id
        await client.close()


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ({"request_id": REQUEST_ID, "payload": b"\x80", "stream": -1}, "stream: must not be negative (got -1)"),
        ({"request_id": REQUEST_ID, "payload": b"\x80", "stream": True}, "stream: must be an integer, not bool"),
        ({"request_id": REQUEST_ID, "payload": b"\x80", "stream": 1.0}, "stream: must be an integer, not float"),
        ({"request_id": REQUEST_ID, "payload": b"\x80", "stream": None}, "stream: must be an integer, not nil"),
        ({"request_id": REQUEST_ID, "credit": "8"}, "credit: must be an integer, not str"),
        ({"request_id": REQUEST_ID, "credit": 1, "cancel": True}, "has no payload and no cancel"),
        ({"credit": 1}, "credit envelope is invalid: request_id is missing"),
        ({"request_id": "nope", "credit": 1}, "'nope' is not a valid UUID"),
    ],
)
def test_malformed_stream_and_credit(envelope: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvelopeError) as raised:
        decode_client_envelope(msgpack.packb(envelope, use_bin_type=True))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ({"request_id": REQUEST_ID, "item": "text"}, "item must be bin, found str"),
        ({"request_id": REQUEST_ID, "item": b"\x80", "payload": None}, "has no payload, error or end"),
        ({"request_id": REQUEST_ID, "item": b"\x80", "end": True}, "has no payload, error or end"),
        ({"request_id": REQUEST_ID, "end": 1}, "end must be true, not int"),
        ({"request_id": REQUEST_ID, "end": True, "error": None}, "has no payload or error"),
        ({"item": b"\x80"}, "response envelope is invalid: request_id is missing"),
    ],
)
def test_malformed_item_and_end(envelope: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvelopeError) as raised:
        decode_server_envelope(msgpack.packb(envelope, use_bin_type=True))
    assert message in str(raised.value)


@pytest.mark.parametrize("credit", [1, 127, 128, 65536, MAX_CREDIT])
def test_credit_integer_forms(credit: int) -> None:
    assert decode_client_envelope(encode_credit(REQUEST_ID, credit)) == (REQUEST_ID, None, None, None, credit)
    body = encode_request(REQUEST_ID, b"\x80", 5, credit)
    assert decode_client_envelope(body) == (REQUEST_ID, b"\x80", 5, credit, None)


@pytest.mark.parametrize("credit", [MAX_CREDIT + 1, 2**32, 2**64 - 1])
def test_credit_beyond_the_bound_is_read_as_the_bound(credit: int) -> None:
    # As the Go decoder reads it, so that sums of credits stay bounded.
    assert decode_client_envelope(encode_credit(REQUEST_ID, credit))[4] == MAX_CREDIT
    assert decode_client_envelope(encode_request(REQUEST_ID, b"\x80", None, credit))[3] == MAX_CREDIT


# The handler


async def test_stream_handler_called_directly_validates_its_items() -> None:
    app = streaming.StreamingApplication()
    assert app.streams and not sample.app.streams
    assert app.response_model is streaming.Item
    assert app.request_model is streaming.StreamRequest
    items = [item async for item in app.execute({"count": 3, "size": 1})]
    assert items == [streaming.Item(i=i, pad="x") for i in range(3)]
    with pytest.raises(Exception) as raised:
        [item async for item in app.execute({"count": 3, "bad_at": 1})]
    assert type(raised.value).__name__ == "ValidationError"
    # The generator, left at the yield of the item that is not valid, was closed.
    assert app.closed_by == ["GeneratorExit"]
    with pytest.raises(Exception) as raised:
        app.execute({"count": "many"})
    assert type(raised.value).__name__ == "ValidationError"


async def test_stream_handler_called_directly_is_closed_when_left() -> None:
    app = streaming.StreamingApplication()
    items = app.execute({"count": -1})
    assert (await anext(items)).i == 0
    await items.aclose()
    assert app.closed_by == ["GeneratorExit"]


def test_stream_annotations() -> None:
    class Unannotated(Application[streaming.N, streaming.N]):
        async def execute(self, request: streaming.N) -> streaming.N:  # type: ignore[override]
            yield request  # type: ignore[misc]

    with pytest.raises(TypeError, match="NotAGenerator.execute is annotated to return a stream"):

        class NotAGenerator(Application[streaming.N, streaming.N]):
            async def execute(self, request: streaming.N) -> AsyncIterator[streaming.N]:  # type: ignore[override]
                return request  # type: ignore[return-value]

    with pytest.raises(TypeError, match=r"must annotate its return as AsyncIterator\[Item\]"):
        Unannotated().response_model  # noqa: B018


def test_loader_accepts_a_stream_handler() -> None:
    app = load_application("apps.streaming:app")
    assert app.streams and app.response_model.__name__ == "Item"


def test_loader_reports_a_stream_handler_without_an_item_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "untyped_stream.py").write_text(
        "from ociapp import Application\n"
        "from pydantic import BaseModel\n"
        "class R(BaseModel):\n    n: int\n"
        "class A(Application):\n"
        "    async def execute(self, request: R) -> R:\n"
        "        yield request\n"
        "app = A()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ApplicationLoadError, match=r"AsyncIterator\[Item\]"):
        load_application("untyped_stream:app")


def test_schema_of_a_stream_handler() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ociapp", "schema", "--app", "apps.streaming:app"],
        capture_output=True, text=True, timeout=60, cwd=TESTS,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["stream"] is True
    assert document["capabilities"] == ["cancel", "deadline", "stream"]
    assert document["response"]["title"] == "Item"  # the items' schema
    assert document["request"]["title"] == "StreamRequest"


# Streams over real sockets


class Consumer:
    """Reads one stream's envelopes, checks that none comes without credit,
    and grants credit as it takes items."""

    def __init__(self, client: RawClient, request_id: str, credit: int) -> None:
        self.client = client
        self.request_id = request_id
        self.credit = credit
        self.items: list[Any] = []

    async def next(self) -> Response:
        envelope = await self.client.receive()
        assert envelope.request_id == self.request_id, envelope
        if envelope.item is not None:
            assert self.credit > 0, "an item without credit"
            self.credit -= 1
            self.items.append(envelope.item)
        return envelope

    def grant(self, credit: int) -> None:
        self.credit += credit
        self.client.credit(self.request_id, credit)

    async def take(self, count: int) -> None:
        for _ in range(count):
            envelope = await self.next()
            assert envelope.item is not None, envelope

    async def rest(self, grant_every: int = 0) -> Response:
        """Takes items up to the envelope that ends the stream, granting
        grant_every credits each time that many were taken."""

        while True:
            envelope = await self.next()
            if envelope.item is None:
                return envelope
            if grant_every and len(self.items) % grant_every == 0:
                self.grant(grant_every)


async def round_trip(client: RawClient) -> None:
    """Waits for a StreamRequired answer from the stream app: every frame
    sent before was read, and the loop turned, by then."""

    response = await client.call({"count": 1})
    assert response.error is not None and response.error.error_type == "StreamRequired"


async def test_ten_thousand_items_arrive_complete_and_in_order(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        consumer = Consumer(client, client.send({"count": 10000, "size": 10}, stream=16), 16)
        end = await consumer.rest(grant_every=8)
        assert end.end and end.payload is None and end.error is None
        assert consumer.items == [{"i": i, "pad": "x" * 10} for i in range(10000)]
        assert app.produced == 10000 and app.closed_by == []
        # Nothing follows the end: the next answer is the next request's.
        await round_trip(client)
        await client.close()


async def test_a_consumer_without_credit_holds_the_producer(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        consumer = Consumer(client, client.send({"count": -1}, stream=5), 5)
        await consumer.take(5)
        await round_trip(client)  # no sixth item came before its answer
        assert app.produced <= 5 + 1
        consumer.grant(3)
        await consumer.take(3)
        await round_trip(client)
        assert 8 <= app.produced <= 8 + 1
        (connection,) = server._connections
        assert connection._streams[consumer.request_id].credit == 0
        assert consumer.items == [{"i": i, "pad": ""} for i in range(8)]
        client.send_bytes(pack_frame(encode_cancel(consumer.request_id)))
        await asyncio.wait_for(app.closed.wait(), 5)
        await round_trip(client)
        assert not connection._streams and not connection.outstanding()
        await client.close()


async def test_credits_add_up(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        consumer = Consumer(client, client.send({"count": 7}, stream=1), 1)
        await consumer.take(1)
        consumer.grant(2)
        consumer.grant(4)
        assert (await consumer.rest()).end
        assert len(consumer.items) == 7 and consumer.credit == 0
        await client.close()


async def test_error_after_k_items(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        for fail_at, credit in ((3, 16), (5, 2), (0, 4), (4, 4)):
            consumer = Consumer(client, client.send({"count": 10, "fail_at": fail_at}, stream=credit), credit)
            envelope = await consumer.rest(grant_every=credit)
            assert consumer.items == [{"i": i, "pad": ""} for i in range(fail_at)]
            assert envelope.item is None and not envelope.end and envelope.payload is None
            assert envelope.error.error_type == "StreamFailed"
            assert envelope.error.message == f"failed at {fail_at}"
        await round_trip(client)
        await client.close()


async def test_an_item_that_is_not_valid_ends_the_stream(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        consumer = Consumer(client, client.send({"count": 10, "bad_at": 2}, stream=16), 16)
        envelope = await consumer.rest()
        assert len(consumer.items) == 2
        # Reported as a response that is not valid is.
        assert envelope.error.error_type == "ValidationError"
        assert envelope.error.message == VALIDATION_MESSAGE
        (error,) = envelope.error.details["errors"]
        assert error["loc"] == ["i"] and error["type"] == "int_parsing"
        # The generator, left at its yield, was closed.
        assert app.closed_by == ["GeneratorExit"]
        await client.close()


async def test_a_request_that_is_not_valid_is_answered_before_any_item(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = client.send({"count": "many"}, stream=4)
        response = await client.receive()
        assert response.request_id == request_id
        assert response.error.error_type == "ValidationError"
        assert response.error.details["errors"][0]["loc"] == [1, "count"]
        (connection,) = server._connections
        assert not connection._streams
        await client.close()


@pytest.mark.parametrize("where", ["out of credit", "inside the handler"])
async def test_cancel_of_a_blocked_stream(where: str, short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        if where == "out of credit":
            consumer = Consumer(client, client.send({"count": -1}, stream=2), 2)
            await consumer.take(2)
        else:
            consumer = Consumer(client, client.send({"count": -1, "block_at": 1}, stream=16), 16)
            await consumer.take(1)
            await asyncio.wait_for(app.blocked.wait(), 5)
        client.send_bytes(pack_frame(encode_cancel(consumer.request_id)))
        await asyncio.wait_for(app.closed.wait(), 5)
        # Out of credit, the generator waits at its yield and is closed
        # there; inside its await, its task is cancelled.
        expected = "GeneratorExit" if where == "out of credit" else "CancelledError"
        assert app.closed_by == [expected]
        # Credit for it now is ignored, and nothing more comes for it: the
        # connection serves the next stream.
        client.credit(consumer.request_id, 10)
        following = Consumer(client, client.send({"count": 3}, stream=3), 3)
        assert (await following.rest()).end
        assert len(following.items) == 3
        (connection,) = server._connections
        assert not connection._streams and not connection._running
        await client.close()


async def test_cancel_in_the_same_write_as_the_stream_request(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = str(uuid.uuid4())
        request = pack_frame(encode_request(request_id, encode_payload({"count": -1}), None, 3))
        client.send_bytes(request + pack_frame(encode_cancel(request_id)))
        await asyncio.wait_for(app.closed.wait(), 5)
        # At most its credit's items went out, and no answer ends it.
        for _ in range(min(app.produced, 3)):
            assert (await client.receive()).request_id == request_id
        await round_trip(client)
        await client.close()


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "lazy"])
async def test_credit_and_cancel_in_the_same_write_as_the_stream_request(
    eager: bool, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before Python 3.12 a request's task takes its first step a loop turn
    # after its frame is read: a credit read with the request still counts,
    # and a stream cancelled before its first step is forgotten.
    monkeypatch.setattr(server_module, "_EAGER_TASKS", eager and server_module._EAGER_TASKS)
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = str(uuid.uuid4())
        client.send_bytes(
            pack_frame(encode_request(request_id, encode_payload({"count": 3}), None, 1))
            + pack_frame(encode_credit(request_id, 2))
        )
        consumer = Consumer(client, request_id, 3)
        assert (await consumer.rest()).end and len(consumer.items) == 3

        doomed = str(uuid.uuid4())
        client.send_bytes(
            pack_frame(encode_request(doomed, encode_payload({"count": -1}), None, 1))
            + pack_frame(encode_cancel(doomed))
        )
        # Started eagerly, it sent its one credited item before the cancel
        # was read; then nothing more.
        probe = client.send({"count": 1})
        envelopes = [await client.receive()]
        while envelopes[-1].request_id != probe:
            envelopes.append(await client.receive())
        assert [e.item for e in envelopes[:-1]] == ([{"i": 0, "pad": ""}] if eager else [])
        assert envelopes[-1].error.error_type == "StreamRequired"
        (connection,) = server._connections
        while connection.outstanding():
            await asyncio.sleep(0.01)
        assert not connection._streams and not connection._running
        await client.close()


async def test_connection_end_closes_the_stream(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        consumer = Consumer(client, client.send({"count": -1}, stream=1), 1)
        await consumer.take(1)
        await client.close()
        await asyncio.wait_for(app.closed.wait(), 5)
        assert app.closed_by == ["GeneratorExit"]


async def test_end_of_the_client_side_ends_a_stream_out_of_credit(short_tmp: Path) -> None:
    # No credit can come any more: the stream ends with an error, and the
    # connection closes once nothing is outstanding.
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        consumer = Consumer(client, client.send({"count": -1}, stream=1), 1)
        await consumer.take(1)
        client.writer.write_eof()
        envelope = await consumer.next()
        assert envelope.error.error_type == "CancelledError"
        assert "waited for credit" in envelope.error.message
        assert app.closed_by == ["GeneratorExit"]
        assert await client.closed_by_server()
        await client.close()


async def test_shutdown_ends_a_stream_out_of_credit(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        consumer = Consumer(client, client.send({"count": -1}, stream=1), 1)
        await consumer.take(1)
        shutdown = asyncio.ensure_future(server.shutdown())
        envelope = await consumer.next()
        assert envelope.error.error_type == "CancelledError"
        assert envelope.error.message == "the server stopped before the stream finished"
        await asyncio.wait_for(shutdown, 5)
        assert app.closed_by == ["GeneratorExit"]
        await client.close()


async def test_stream_handler_asked_without_stream(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        response = await client.call({"count": 3})
        assert response.payload is None and response.item is None and not response.end
        assert response.error.error_type == "StreamRequired"
        assert response.error.message == STREAM_REQUIRED_MESSAGE
        assert STREAM_REQUIRED_MESSAGE == "this application streams its responses: call it as a stream"
        assert app.produced == 0  # the handler never ran
        await client.close()


async def test_handler_that_does_not_stream_asked_for_a_stream(short_tmp: Path) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = client.send({"value": "one"}, stream=4)
        response = await client.receive()
        assert (response.request_id, response.payload) == (request_id, {"value": "one"})
        assert response.error is None and response.item is None and not response.end
        # A credit for it is ignored: it is not streaming.
        client.credit(request_id, 5)
        assert (await client.call({"value": "next"})).payload == {"value": "next"}
        await client.close()


async def test_credit_for_an_unknown_request_is_ignored(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.credit(str(uuid.uuid4()), 100)
        consumer = Consumer(client, client.send({"count": 3}, stream=1), 1)
        await consumer.take(1)
        client.credit(str(uuid.uuid4()), 100)
        await round_trip(client)
        # The stranger's credit went nowhere: one item sent, one waiting.
        assert app.produced == 2
        consumer.grant(2)
        assert (await consumer.rest()).end
        await client.close()


async def test_streams_on_one_connection_have_their_own_credit(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        first = client.send({"count": 4}, stream=1)
        second = client.send({"count": 4}, stream=4)
        envelopes = [await client.receive() for _ in range(1 + 4 + 1)]
        by_id = {first: [], second: []}
        for envelope in envelopes:
            by_id[envelope.request_id].append(envelope)
        assert len(by_id[first]) == 1 and by_id[first][0].item == {"i": 0, "pad": ""}
        assert [e.item for e in by_id[second][:4]] == [{"i": i, "pad": ""} for i in range(4)]
        assert by_id[second][4].end
        client.credit(first, 3)
        rest = [await client.receive() for _ in range(4)]
        assert [e.item for e in rest[:3]] == [{"i": i, "pad": ""} for i in range(1, 4)]
        assert rest[3].end and {e.request_id for e in rest} == {first}
        await client.close()


async def test_server_sends_the_vector_bytes(vectors: dict[str, Any], short_tmp: Path) -> None:
    """A live server's item and end frames are byte-identical to the Go-made
    vectors."""

    cases = {case["name"]: case for case in vectors["stream"]}
    async with serving(streaming.OneItemApplication(), short_tmp) as server:
        reader, writer = await asyncio.open_unix_connection(str(server.socket_path))
        writer.write(pack_frame(encode_request(REQUEST_ID, encode_payload(cases["item"]["payload"]), None, 1)))
        want = bytes.fromhex(cases["item"]["frame"]) + bytes.fromhex(cases["end"]["frame"])
        assert await asyncio.wait_for(reader.readexactly(len(want)), 5) == want
        writer.close()


async def test_stream_handler_reads_its_deadline(short_tmp: Path) -> None:
    async with serving(streaming.DeadlineStreamApplication(), short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = client.send({"n": 3}, deadline_ms=30000, stream=1)
        consumer = Consumer(client, request_id, 1)
        end = await consumer.rest(grant_every=1)
        assert end.end
        assert len(consumer.items) == 3
        assert all(29000 < item["n"] <= 30000 for item in consumer.items)
        consumer = Consumer(client, client.send({"n": 2}, stream=2), 2)
        assert (await consumer.rest()).end
        assert consumer.items == [{"n": -1}, {"n": -1}]
        await client.close()


async def test_failure_past_the_deadline_gets_no_answer(short_tmp: Path) -> None:
    app = streaming.StreamingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        consumer = Consumer(client, client.send({"count": 5, "fail_at": 2}, deadline_ms=0, stream=16), 16)
        await consumer.take(2)
        await round_trip(client)  # and not the StreamFailed error first
        await client.close()


# The runtime's stream test app (runtime/testdata/streamer-app)


def streamer_app() -> Application[Any, Any]:
    source = str(REPO / "runtime" / "testdata" / "streamer-app" / "src")
    if source not in sys.path:
        sys.path.insert(0, source)
    from streamer_app import main

    return main.StreamerApplication()


async def test_runtime_streamer_app(short_tmp: Path) -> None:
    app = streamer_app()
    assert app.streams
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)

        async def ask(payload: dict[str, Any], credit: int = 4) -> tuple[list[Any], Response]:
            consumer = Consumer(client, client.send(payload, stream=credit), credit)
            end = await consumer.rest(grant_every=credit)
            return consumer.items, end

        items, end = await ask({"count": 5, "size": 3})
        assert end.end and items == [{"i": i, "pad": "xxx"} for i in range(5)]
        assert (await ask({"op": "produced"}))[0] == [{"i": 5, "pad": ""}]

        items, end = await ask({"count": 10, "fail_at": 3})
        assert items == [{"i": i, "pad": ""} for i in range(3)]
        assert (end.error.error_type, end.error.message) == ("StreamFailed", "failed at 3")
        items, end = await ask({"count": 3, "fail_at": 3})
        assert len(items) == 3 and end.error.message == "failed at 3"
        items, end = await ask({"count": 2, "fail_at": 3})
        assert len(items) == 2 and end.end

        # Forever, held by its credit, then cancelled.
        consumer = Consumer(client, client.send({"count": -1}, stream=4), 4)
        await consumer.take(4)
        assert (await ask({"op": "produced"}))[0] == [{"i": 4 + 1, "pad": ""}]
        client.send_bytes(pack_frame(encode_cancel(consumer.request_id)))
        # The cancel reaches the generator at the task's next step: a
        # request read with it may be answered first.
        for _ in range(500):
            if (await ask({"op": "cancelled"}))[0] == [{"i": 1, "pad": ""}]:
                break
            await asyncio.sleep(0.01)
        assert (await ask({"op": "cancelled"}))[0] == [{"i": 1, "pad": ""}]

        response = await client.call({"count": 1})
        assert response.error.error_type == "StreamRequired"
        items, end = await ask({"op": "nope"})
        assert items == [] and end.error.error_type == "ValueError"
        await client.close()
