"""The protocol's deadline and cancel capabilities: their envelopes (the
shared vectors, and frames built from docs/protocol.md's bytes), the
deadline accessor, and cancellation over real sockets."""

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import VECTORS, RawClient, serving

from apps import sample
from ociapp import EnvelopeError, request_deadline
from ociapp.payloads import decode_payload, encode_payload
from ociapp.protocol import (
    decode_client_envelope,
    decode_request,
    encode_cancel,
    encode_request,
    pack_frame,
)

REQUEST_ID = "5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f"


def cancel_frame(request_id: str) -> bytes:
    """A cancel envelope's frame, byte by byte as docs/protocol.md lays it out."""

    return (
        b"\x00\x00\x00\x3a"  # length: 58
        + b"\x82"  # map of 2 entries
        + b"\xaarequest_id"
        + b"\xd9\x24"
        + request_id.encode("ascii")
        + b"\xa6cancel"
        + b"\xc3"  # true
    )


def body_of(frame: bytes) -> bytes:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return frame[4:]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # One case per vector of the capability groups, valid and malformed apart.
    data = json.loads(VECTORS.read_text()) if VECTORS.is_file() else {}
    for group in ("deadline_requests", "cancel_requests"):
        cases = data.get(group)
        for kind in ("valid", "malformed"):
            fixture = f"{group}_{kind}"
            if fixture not in metafunc.fixturenames:
                continue
            if not cases:
                if group == "deadline_requests":
                    pytest.fail(f"no {group} vectors in {VECTORS}")
                # Until the vector file has the group, the frames built
                # here from the spec's bytes are all that is checked.
                reason = f"{VECTORS} has no {group} group yet"
                metafunc.parametrize(fixture, [pytest.param(None, marks=pytest.mark.skip(reason=reason))])
                continue
            chosen = [case for case in cases if ("fault" in case) == (kind == "malformed")]
            if not chosen:
                pytest.fail(f"no {kind} vectors in group {group} of {VECTORS}")
            metafunc.parametrize(fixture, chosen, ids=[case["name"] for case in chosen])


# deadline: envelopes


def test_deadline_vector_decodes_and_reencodes(deadline_requests_valid: dict[str, Any]) -> None:
    case = deadline_requests_valid
    frame = bytes.fromhex(case["frame"])
    request_id, payload, deadline_ms, stream, credit = decode_client_envelope(body_of(frame))
    assert (request_id, deadline_ms) == (case["request_id"], case["deadline_ms"])
    assert stream is None and credit is None
    assert decode_payload(payload) == case["payload"]
    assert pack_frame(encode_request(request_id, payload, deadline_ms)) == frame
    # The two-value decoder reads the request and drops the deadline.
    assert decode_request(body_of(frame)) == (request_id, payload)


def test_malformed_deadline_vector_is_rejected(deadline_requests_malformed: dict[str, Any]) -> None:
    case = deadline_requests_malformed
    body = body_of(bytes.fromhex(case["frame"]))
    for decode in (decode_client_envelope, decode_request):
        with pytest.raises(EnvelopeError) as raised:
            decode(body)
        # The Go fault "deadline_ms: must not be negative" and the message
        # "... deadline_ms must not be negative (got -1)" say the same.
        field, reason = case["fault"].split(": ", 1)
        assert field in str(raised.value) and reason in str(raised.value)


async def test_malformed_deadline_vector_closes_a_live_connection(
    deadline_requests_malformed: dict[str, Any], short_tmp: Path
) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        assert (await client.call({"value": "before"})).payload == {"value": "before"}
        client.send_bytes(bytes.fromhex(deadline_requests_malformed["frame"]))
        assert await client.closed_by_server()
        await client.close()


@pytest.mark.parametrize(
    ("deadline_ms", "message"),
    [
        (-1, "deadline_ms must not be negative (got -1)"),
        (-(2**63), "must not be negative"),
        (1.5, "deadline_ms must be an integer, not float"),
        (30.0, "must be an integer, not float"),
        (None, "must be an integer, not nil"),
        (True, "must be an integer, not bool"),
        ("30", "must be an integer, not str"),
        (b"\x01", "must be an integer, not bin"),
    ],
)
def test_deadline_must_be_a_non_negative_integer(deadline_ms: object, message: str) -> None:
    body = msgpack.packb(
        {"request_id": REQUEST_ID, "payload": b"\x80", "deadline_ms": deadline_ms},
        use_bin_type=True,
    )
    with pytest.raises(EnvelopeError, match="request envelope is invalid") as raised:
        decode_client_envelope(body)
    assert message in str(raised.value)


@pytest.mark.parametrize("deadline_ms", [0, 1, 127, 128, 65536, 2**32, 2**64 - 1])
def test_deadline_integer_forms(deadline_ms: int) -> None:
    body = encode_request(REQUEST_ID, b"\x80", deadline_ms)
    assert decode_client_envelope(body) == (REQUEST_ID, b"\x80", deadline_ms, None, None)


def test_deadline_in_signed_integer_form_and_any_key_order() -> None:
    # int8 5, and the keys in another order: readers accept both.
    body = b"\x83\xabdeadline_ms\xd0\x05\xa7payload\xc4\x01\x80\xaarequest_id\xd9\x24" + REQUEST_ID.encode()
    assert decode_client_envelope(body) == (REQUEST_ID, b"\x80", 5, None, None)


def test_request_without_deadline() -> None:
    assert decode_client_envelope(encode_request(REQUEST_ID, b"\x80")) == (
        REQUEST_ID, b"\x80", None, None, None
    )


# cancel: envelopes


def test_cancel_frame_of_the_spec() -> None:
    frame = cancel_frame(REQUEST_ID)
    assert len(frame) == 4 + 58
    assert pack_frame(encode_cancel(REQUEST_ID)) == frame
    assert decode_client_envelope(body_of(frame)) == (REQUEST_ID, None, None, None, None)


def test_cancel_request_id_comes_back_canonical() -> None:
    body = msgpack.packb({"cancel": True, "request_id": "{" + REQUEST_ID.upper() + "}"})
    assert decode_client_envelope(body) == (REQUEST_ID, None, None, None, None)


MALFORMED_CANCELS = {
    "cancel_false": ({"request_id": REQUEST_ID, "cancel": False}, "cancel must be true, not bool"),
    "cancel_int": ({"request_id": REQUEST_ID, "cancel": 1}, "cancel must be true, not int"),
    "cancel_nil": ({"request_id": REQUEST_ID, "cancel": None}, "cancel must be true, not nil"),
    "cancel_str": ({"request_id": REQUEST_ID, "cancel": "true"}, "cancel must be true, not str"),
    "cancel_with_payload": (
        {"request_id": REQUEST_ID, "cancel": True, "payload": b"\x80"},
        "it has a payload",
    ),
    "cancel_without_id": ({"cancel": True}, "request_id is missing"),
    "cancel_bad_id": ({"request_id": "nope", "cancel": True}, "'nope' is not a valid UUID"),
    "cancel_bin_id": ({"request_id": REQUEST_ID.encode(), "cancel": True}, "must be a string, not bin"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_CANCELS))
def test_malformed_cancel_is_rejected(name: str) -> None:
    envelope, message = MALFORMED_CANCELS[name]
    body = msgpack.packb(envelope, use_bin_type=True)
    with pytest.raises(EnvelopeError, match="cancel envelope is invalid") as raised:
        decode_client_envelope(body)
    assert message in str(raised.value)
    with pytest.raises(EnvelopeError):
        decode_request(body)


def test_decode_request_refuses_a_cancel() -> None:
    with pytest.raises(EnvelopeError, match="it is a cancel envelope"):
        decode_request(encode_cancel(REQUEST_ID))


def test_cancel_vector_decodes_and_reencodes(cancel_requests_valid: dict[str, Any]) -> None:
    case = cancel_requests_valid
    frame = bytes.fromhex(case["frame"])
    assert decode_client_envelope(body_of(frame)) == (case["request_id"], None, None, None, None)
    assert pack_frame(encode_cancel(case["request_id"])) == frame


def test_malformed_cancel_vector_is_rejected(cancel_requests_malformed: dict[str, Any]) -> None:
    body = body_of(bytes.fromhex(cancel_requests_malformed["frame"]))
    with pytest.raises(EnvelopeError):
        decode_client_envelope(body)


async def test_malformed_cancel_vector_closes_a_live_connection(
    cancel_requests_malformed: dict[str, Any], short_tmp: Path
) -> None:
    await _assert_closes(short_tmp, bytes.fromhex(cancel_requests_malformed["frame"]))


@pytest.mark.parametrize("name", sorted(MALFORMED_CANCELS))
async def test_malformed_cancel_closes_a_live_connection(name: str, short_tmp: Path) -> None:
    envelope, _ = MALFORMED_CANCELS[name]
    await _assert_closes(short_tmp, pack_frame(msgpack.packb(envelope, use_bin_type=True)))


async def _assert_closes(directory: Path, frame: bytes) -> None:
    """A malformed envelope closes the connection and cancels what runs on it."""

    app = sample.CancellableApplication()
    async with serving(app, directory) as server:
        client = await RawClient.connect(server.socket_path)
        assert (await client.call({"value": "before"})).payload == {"value": "before"}
        client.send({"value": "sleep"})
        await asyncio.wait_for(app.started_event("sleep").wait(), 5)
        client.send_bytes(frame)
        assert await client.closed_by_server()
        await asyncio.wait_for(app.cancelled_event("sleep").wait(), 5)
        await client.close()


# deadline: the accessor


def test_no_deadline_outside_a_request() -> None:
    assert request_deadline() is None


async def test_handler_reads_its_deadline(short_tmp: Path) -> None:
    app = sample.DeadlineApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "timed"}, deadline_ms=30000)
        assert (await client.receive()).payload == {"value": "timed"}
        # The same connection, a request without one: nothing carries over.
        assert (await client.call({"value": "untimed"})).payload == {"value": "untimed"}
        await client.close()
    deadline, started, child = app.seen["timed"]
    assert deadline is not None
    # Read time + 30 s, and the handler started after the read.
    assert 29.0 < deadline - started <= 30.0
    assert child == deadline  # tasks the handler starts see it too
    deadline, _, child = app.seen["untimed"]
    assert deadline is None and child is None
    assert request_deadline() is None  # nor does it leak to the loop


async def test_each_request_has_its_own_deadline(short_tmp: Path) -> None:
    app = sample.DeadlineApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        # Both in one write, read at (nearly) the same time: the deadlines
        # differ by what was asked.
        first = pack_frame(encode_request(str(uuid.uuid4()), encode_payload({"value": "a"}), 1000))
        second = pack_frame(encode_request(str(uuid.uuid4()), encode_payload({"value": "b"}), 61000))
        client.send_bytes(first + second)
        values = {(await client.receive()).payload["value"] for _ in range(2)}
        assert values == {"a", "b"}
        await client.close()
    assert app.seen["b"][0] - app.seen["a"][0] == pytest.approx(60.0, abs=0.05)


async def test_deadline_bounds_work_with_timeout_at(short_tmp: Path) -> None:
    """asyncio.timeout_at(request_deadline()) ends the work at the
    deadline; its TimeoutError, past the deadline, is not answered (the
    client has given up and reports its own timeout), while the connection
    answers the next request."""

    app = sample.DeadlineApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "bounded", "seconds": 3600}, deadline_ms=20)
        await asyncio.sleep(0.3)
        assert (await client.call({"value": "next"})).payload == {"value": "next"}
        await client.close()
    assert app.seen["bounded"][0] is not None


async def test_server_does_not_cancel_at_the_deadline(short_tmp: Path) -> None:
    app = sample.DeadlineApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "late", "seconds": 0.05}, deadline_ms=1)
        assert (await client.receive()).payload == {"value": "late"}
        client.send({"value": "spent", "seconds": 0}, deadline_ms=0)
        assert (await client.receive()).payload == {"value": "spent"}
        await client.close()
    deadline, started, _ = app.seen["spent"]
    assert deadline is not None and deadline <= started


async def test_sync_handler_reads_its_deadline_in_its_thread(short_tmp: Path) -> None:
    app = sample.SyncDeadlineApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "timed"}, deadline_ms=5000)
        before = asyncio.get_running_loop().time()
        assert (await client.receive()).payload == {"value": "timed"}
        assert (await client.call({"value": "untimed"})).payload == {"value": "untimed"}
        await client.close()
    assert app.seen["timed"] is not None
    assert 4.0 < app.seen["timed"] - before <= 5.5
    assert app.seen["untimed"] is None


# cancel: over real sockets


async def test_cancel_ends_a_sleeping_handler_and_the_connection_goes_on(
    short_tmp: Path,
) -> None:
    app = sample.CancellableApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        doomed = client.send({"value": "sleep-doomed"})
        client.send({"value": "sleep-other"})
        await asyncio.wait_for(app.started_event("sleep-doomed").wait(), 5)
        await asyncio.wait_for(app.started_event("sleep-other").wait(), 5)

        client.send_bytes(cancel_frame(doomed))
        await asyncio.wait_for(app.cancelled_event("sleep-doomed").wait(), 5)
        # The handler's task ended, and the server holds nothing of it.
        await asyncio.sleep(0)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == doomed]
        (connection,) = server._connections
        assert doomed not in connection._running and not connection._cancelled

        # The same connection answers a new request, and no answer to the
        # cancelled one comes first.
        fresh = client.send({"value": "fresh"})
        response = await client.receive()
        assert (response.request_id, response.payload) == (fresh, {"value": "fresh"})
        # The other request is still running.
        assert "sleep-other" not in app.cancelled
        assert len(connection.outstanding()) == 1
        await client.close()


async def test_cancel_in_the_same_write_as_its_request(short_tmp: Path) -> None:
    app = sample.CancellableApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = str(uuid.uuid4())
        request = pack_frame(encode_request(request_id, encode_payload({"value": "sleep"})))
        client.send_bytes(request + cancel_frame(request_id))
        await asyncio.wait_for(app.cancelled_event("sleep").wait(), 5)
        assert (await client.call({"value": "next"})).payload == {"value": "next"}
        await client.close()


async def test_cancel_of_an_unknown_or_finished_request_is_ignored(short_tmp: Path) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        finished = await client.call({"value": "done"})
        client.send_bytes(cancel_frame(finished.request_id))
        client.send_bytes(cancel_frame(str(uuid.uuid4())))
        client.send_bytes(cancel_frame(finished.request_id))  # twice
        assert (await client.call({"value": "after"})).payload == {"value": "after"}
        await client.close()


async def test_second_cancel_of_a_request_is_ignored(short_tmp: Path) -> None:
    app = sample.CancellableApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = client.send({"value": "sleep"})
        await asyncio.wait_for(app.started_event("sleep").wait(), 5)
        client.send_bytes(cancel_frame(request_id) * 2)
        await asyncio.wait_for(app.cancelled_event("sleep").wait(), 5)
        client.send_bytes(cancel_frame(request_id))
        assert (await client.call({"value": "after"})).payload == {"value": "after"}
        await client.close()


async def test_cancel_of_a_sync_handler_stops_waiting_for_its_thread(short_tmp: Path) -> None:
    # A thread cannot be interrupted: the request's task ends, the thread
    # runs on until execute returns, and its result goes nowhere.
    app = sample.BlockingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        waiting = client.send({"value": "wait"})
        for _ in range(500):
            if app.threads:
                break
            await asyncio.sleep(0.01)
        client.send_bytes(cancel_frame(waiting))
        (connection,) = server._connections
        for _ in range(500):
            if not connection.outstanding():
                break
            await asyncio.sleep(0.01)
        assert not connection.outstanding()
        app.release.set()
        response = await client.call({"value": "after"})
        assert (response.request_id != waiting, response.payload) == (True, {"value": "after"})
        await client.close()


async def test_cancelled_requests_do_not_hold_up_a_clean_end(short_tmp: Path) -> None:
    app = sample.CancellableApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        request_id = client.send({"value": "sleep"})
        await asyncio.wait_for(app.started_event("sleep").wait(), 5)
        client.send_bytes(cancel_frame(request_id))
        client.writer.write_eof()
        assert await client.closed_by_server()
        assert app.cancelled_event("sleep").is_set()
        await client.close()
