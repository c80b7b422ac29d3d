"""The server over real Unix sockets: responses, errors, concurrency,
connection rules and socket handling."""

import asyncio
import os
import socket
import stat
import threading
from pathlib import Path

import msgpack
import pytest
from conftest import RawClient, serving
from pydantic import ValidationError

from apps import sample
from ociapp import OciAppServer, ServerLifecycleError
from ociapp import server as server_module
from ociapp.protocol import encode_request, pack_frame


async def test_round_trip(short_tmp: Path) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        response = await client.call({"value": "hello"})
        assert response.payload == {"value": "hello"}
        assert response.error is None
        await client.close()


async def test_request_id_comes_back_canonical(short_tmp: Path) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "x"}, request_id="{5F0C6D7E-8A9B-4C1D-9E2F-3A4B5C6D7E8F}")
        response = await client.receive()
        assert response.request_id == "5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f"
        await client.close()


async def test_validation_error_matches_validate_call(short_tmp: Path) -> None:
    payload = {"missing": "value"}
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        response = await client.call(payload)
        await client.close()
    assert response.payload is None
    assert response.error.error_type == "ValidationError"
    assert response.error.message == "application payload validation failed"

    # The same errors as the validate_call wrapper reports (and the original
    # server sent): locations start with 1, the request argument's position.
    with pytest.raises(ValidationError) as raised:
        await sample.app.execute(payload)  # type: ignore[arg-type]
    expected = msgpack.unpackb(msgpack.packb(raised.value.errors()), raw=False)
    assert response.error.details == {"errors": expected}
    assert expected[0]["loc"] == [1, "value"]
    assert expected[0]["url"].startswith("https://errors.pydantic.dev/")


async def test_validation_error_context_holding_an_exception_is_serialized(
    short_tmp: Path,
) -> None:
    async with serving(sample.strict_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        response = await client.call({"value": "bad"})
        await client.close()
    (error,) = response.error.details["errors"]
    assert error["type"] == "value_error"
    assert error["loc"] == [1, "value"]
    assert error["ctx"] == {"error": "bad value"}


async def test_response_validation_error(short_tmp: Path) -> None:
    async with serving(sample.wrong_response_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        response = await client.call({"value": "x"})
        await client.close()
    assert response.error.error_type == "ValidationError"
    (error,) = response.error.details["errors"]
    assert error["loc"] == ["value"]
    assert error["input"] == 42


async def test_dict_response_is_validated_into_the_model(short_tmp: Path) -> None:
    async with serving(sample.dict_response_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        assert (await client.call({"value": "x"})).payload == {"value": "x"}
        await client.close()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1", "payload is not valid msgpack"),
        (b"", "payload is not valid msgpack"),
        (msgpack.packb([1, 2]), "payload must decode to a msgpack map"),
        (msgpack.packb({1: "x"}, strict_types=False), "payload keys must be strings"),
    ],
    ids=["not-msgpack", "empty", "not-a-map", "int-keys"],
)
async def test_payload_codec_errors(short_tmp: Path, payload: bytes, message: str) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send(payload, raw=True)
        response = await client.receive()
        # The connection survives a bad payload.
        assert (await client.call({"value": "after"})).payload == {"value": "after"}
        await client.close()
    assert response.error.error_type == "PayloadCodecError"
    assert response.error.message == message
    assert response.error.details is None


@pytest.mark.parametrize(
    ("value", "error_type", "message"),
    [
        ("boom", "RuntimeError", "boom"),
        ("quota", "QuotaExceeded", "quota exceeded"),
        ("silent", "Silent", "Silent"),
        ("cancel", "CancelledError", "CancelledError"),
    ],
)
async def test_application_exception(
    short_tmp: Path, value: str, error_type: str, message: str
) -> None:
    async with serving(sample.failing_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        response = await client.call({"value": value})
        assert (await client.call({"value": "boom"})).error.error_type == "RuntimeError"
        await client.close()
    assert response.payload is None
    assert (response.error.error_type, response.error.message) == (error_type, message)
    assert response.error.details is None


async def test_values_msgpack_cannot_hold_are_sent_in_json_form(short_tmp: Path) -> None:
    async with serving(sample.rich_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        response = await client.call({"value": "x"})
        await client.close()
    assert response.payload == {
        "when": "2026-11-26T12:30:00Z",
        "day": "2026-11-26",
        "ident": "5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f",
        "amount": "1.50",
        "color": "red",
        "tags": ["a"],
        "raw": b"\x00\x01",  # bytes stay msgpack bin
        "ratio": 0.5,
        "nothing": None,
    }


async def test_unserializable_response_is_a_payload_codec_error(short_tmp: Path) -> None:
    async with serving(sample.opaque_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        response = await client.call({"value": "opaque"})
        # The failed encoding leaves nothing behind for the next response.
        assert (await client.call({"value": "plain"})).payload == {"thing": "plain"}
        await client.close()
    assert response.error.error_type == "PayloadCodecError"
    assert response.error.message == "payload is not msgpack serializable"


async def test_msgpack_timestamp_validates_into_datetime(short_tmp: Path) -> None:
    import datetime

    when = datetime.datetime(2026, 11, 26, 8, 0, tzinfo=datetime.timezone.utc)
    payload = msgpack.packb({"when": when}, datetime=True)
    async with serving(sample.timed_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send(payload, raw=True)
        response = await client.receive()
        await client.close()
    assert response.payload == {"value": "2026-11-26T08:00:00+00:00"}


async def test_task_apis_work_inside_execute(short_tmp: Path) -> None:
    async with serving(sample.task_aware_app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        assert (await client.call({"value": "x"})).payload == {"value": "x"}
        await client.close()


async def test_sync_execute_runs_in_a_thread_without_blocking_the_loop(
    short_tmp: Path,
) -> None:
    app = sample.BlockingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        waiting = client.send({"value": "wait"})
        # While "wait" blocks its thread, the loop keeps serving: this
        # request goes in and its response comes out.
        quick = client.send({"value": "quick"})
        first = await client.receive()
        assert (first.request_id, first.payload) == (quick, {"value": "quick"})
        app.release.set()
        second = await client.receive()
        assert (second.request_id, second.payload) == (waiting, {"value": "wait"})
        await client.close()
    assert threading.get_ident() not in app.threads
    assert len(app.threads) == 2


async def test_sync_execute_does_not_delay_async_timers(short_tmp: Path) -> None:
    app = sample.BlockingApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "slow", "seconds": 0.5})
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(0.01)
        assert asyncio.get_running_loop().time() - started < 0.25
        assert (await client.receive()).payload == {"value": "slow"}
        await client.close()


async def test_pipelined_responses_come_in_completion_order(short_tmp: Path) -> None:
    app = sample.GatedApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        ids = {value: client.send({"value": value}) for value in ("first", "second", "third")}
        for value in ids:
            await asyncio.wait_for(app.started_event(value).wait(), 5)
        order = ["third", "first", "second"]
        for value in order:
            app.gate(value).set()
            response = await client.receive()
            assert (response.request_id, response.payload) == (ids[value], {"value": value})
        await client.close()


async def test_many_requests_in_one_write(short_tmp: Path) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        batch = b"".join(
            pack_frame(encode_request(f"00000000-0000-4000-8000-{n:012d}", msgpack.packb({"value": str(n)})))
            for n in range(500)
        )
        client.send_bytes(batch)
        seen = {}
        for _ in range(500):
            response = await client.receive()
            seen[response.request_id] = response.payload["value"]
        assert seen == {f"00000000-0000-4000-8000-{n:012d}": str(n) for n in range(500)}
        await client.close()


async def test_frames_split_across_writes(short_tmp: Path) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        frame = pack_frame(encode_request("5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f", msgpack.packb({"value": "split"})))
        for index in range(len(frame)):
            client.send_bytes(frame[index : index + 1])
            await client.writer.drain()
            await asyncio.sleep(0)
        assert (await client.receive()).payload == {"value": "split"}
        await client.close()


async def test_large_frame_within_the_limit(short_tmp: Path) -> None:
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        value = "x" * (3 * 1024 * 1024)
        assert (await client.call({"value": value})).payload == {"value": value}
        await client.close()


async def test_malformed_frame_closes_only_its_connection_and_cancels_its_requests(
    short_tmp: Path,
) -> None:
    app = sample.GatedApplication()
    async with serving(app, short_tmp) as server:
        bad = await RawClient.connect(server.socket_path)
        good = await RawClient.connect(server.socket_path)
        bad.send({"value": "doomed"})
        good_id = good.send({"value": "survivor"})
        await asyncio.wait_for(app.started_event("doomed").wait(), 5)
        await asyncio.wait_for(app.started_event("survivor").wait(), 5)

        bad.send_bytes(b"\x00\x00\x00\x00")  # zero length
        assert await bad.closed_by_server()
        for _ in range(100):
            if app.cancelled:
                break
            await asyncio.sleep(0.01)
        assert app.cancelled == ["doomed"]

        app.gate("survivor").set()
        response = await good.receive()
        assert (response.request_id, response.payload) == (good_id, {"value": "survivor"})
        app.gate("still").set()
        assert (await good.call({"value": "still"})).payload == {"value": "still"}
        await bad.close()
        await good.close()


async def test_malformed_envelope_cancels_outstanding_requests(short_tmp: Path) -> None:
    app = sample.GatedApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "pending"})
        await asyncio.wait_for(app.started_event("pending").wait(), 5)
        client.send_bytes(pack_frame(msgpack.packb(["not", "an", "envelope"])))
        assert await client.closed_by_server()
        await asyncio.sleep(0.05)
        assert app.cancelled == ["pending"]
        await client.close()


async def test_frame_above_the_configured_maximum_closes_the_connection(
    short_tmp: Path,
) -> None:
    async with serving(sample.app, short_tmp, max_frame_size=1024) as server:
        client = await RawClient.connect(server.socket_path)
        assert (await client.call({"value": "small"})).payload == {"value": "small"}
        client.send({"value": "y" * 2000})
        assert await client.closed_by_server()
        await client.close()


async def test_clean_eof_finishes_outstanding_requests(short_tmp: Path) -> None:
    app = sample.GatedApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        first = client.send({"value": "one"})
        second = client.send({"value": "two"})
        await asyncio.wait_for(app.started_event("two").wait(), 5)
        client.writer.write_eof()
        await asyncio.sleep(0.05)
        app.gate("two").set()
        app.gate("one").set()
        got = {(await client.receive()).request_id, (await client.receive()).request_id}
        assert got == {first, second}
        assert await client.closed_by_server()
        assert app.cancelled == []
        await client.close()


async def test_eof_inside_a_frame_is_a_protocol_error(short_tmp: Path) -> None:
    app = sample.GatedApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "pending"})
        await asyncio.wait_for(app.started_event("pending").wait(), 5)
        client.send_bytes(b"\x00\x00\x00\x10\x81")
        client.writer.write_eof()
        assert await client.closed_by_server()
        await asyncio.sleep(0.05)
        assert app.cancelled == ["pending"]
        await client.close()


async def test_vanished_client_is_cleaned_up(short_tmp: Path) -> None:
    # On a Unix socket a client that goes away looks like a clean EOF, so its
    # requests finish; writing their responses then fails quietly.
    app = sample.GatedApplication()
    async with serving(app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        client.send({"value": "abandoned"})
        await asyncio.wait_for(app.started_event("abandoned").wait(), 5)
        client.writer.transport.abort()
        await asyncio.sleep(0.05)
        app.gate("abandoned").set()
        for _ in range(100):
            if not server._connections:
                break
            await asyncio.sleep(0.01)
        assert not server._connections
        app.gate("next").set()
        other = await RawClient.connect(server.socket_path)
        assert (await other.call({"value": "next"})).payload == {"value": "next"}
        await other.close()


def test_socket_is_world_writable(short_tmp: Path) -> None:
    async def main() -> None:
        old = os.umask(0o077)  # the mode must not depend on the umask
        try:
            async with serving(sample.app, short_tmp) as server:
                mode = os.stat(server.socket_path).st_mode
                assert stat.S_ISSOCK(mode)
                assert stat.S_IMODE(mode) == 0o666
        finally:
            os.umask(old)

    asyncio.run(main())


@pytest.mark.parametrize("stale", ["socket", "file"])
async def test_stale_socket_is_replaced(short_tmp: Path, stale: str) -> None:
    path = short_tmp / "app.sock"
    if stale == "socket":
        leftover = socket.socket(socket.AF_UNIX)
        leftover.bind(str(path))
        leftover.close()  # bound, never unlinked: what a crashed server leaves
    else:
        path.write_text("stale")
    async with serving(sample.app, short_tmp) as server:
        client = await RawClient.connect(server.socket_path)
        assert (await client.call({"value": "fresh"})).payload == {"value": "fresh"}
        await client.close()
    assert not path.exists()  # removed on close


async def test_parent_directories_are_created(short_tmp: Path) -> None:
    directory = short_tmp / "a" / "b"
    async with serving(sample.app, directory) as server:
        assert server.socket_path.is_socket()


async def test_directory_in_the_way_is_a_lifecycle_error(short_tmp: Path) -> None:
    (short_tmp / "app.sock").mkdir()
    server = OciAppServer(sample.app, short_tmp / "app.sock")
    with pytest.raises(ServerLifecycleError, match="is a directory"):
        await server.start()


async def test_socket_appears_only_once_it_accepts_connections(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = short_tmp / "app.sock"
    renames = []
    real_rename = os.rename

    def checked_rename(source: str, target: str) -> None:
        # At the moment of the rename, the staged socket already listens
        # with its final mode, and nothing is at the final path yet.
        assert not os.path.exists(target)
        assert stat.S_IMODE(os.stat(source).st_mode) == 0o666
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(source))
        probe.close()
        renames.append((Path(source), Path(target)))
        real_rename(source, target)

    monkeypatch.setattr(server_module.os, "rename", checked_rename)
    async with serving(sample.app, short_tmp):
        assert path.is_socket()
        assert renames and renames[0][1] == path
        assert renames[0][0].parent == short_tmp
        assert sorted(p.name for p in short_tmp.iterdir()) == ["app.sock"]


async def test_close_removes_only_its_own_socket(short_tmp: Path) -> None:
    path = short_tmp / "app.sock"
    first = OciAppServer(sample.app, path)
    await first.start()
    second = OciAppServer(sample.app, path)
    await second.start()  # replaces the first one's socket
    await first.close()
    assert path.is_socket()
    client = await RawClient.connect(path)
    assert (await client.call({"value": "second"})).payload == {"value": "second"}
    await client.close()
    await second.close()
    assert not path.exists()


async def test_shutdown_drains_outstanding_requests(short_tmp: Path) -> None:
    app = sample.GatedApplication()
    server = OciAppServer(app, short_tmp / "app.sock")
    await server.start()
    client = await RawClient.connect(server.socket_path)
    request_id = client.send({"value": "inflight"})
    await asyncio.wait_for(app.started_event("inflight").wait(), 5)

    shutdown = asyncio.create_task(server.shutdown())
    await asyncio.sleep(0.05)
    assert not shutdown.done()
    assert not server.socket_path.exists()  # no new connections while draining
    app.gate("inflight").set()
    response = await client.receive()
    assert (response.request_id, response.payload) == (request_id, {"value": "inflight"})
    await asyncio.wait_for(shutdown, 5)
    assert await client.closed_by_server()
    assert app.cancelled == []
    await client.close()


async def test_handle_request_serves_one_envelope() -> None:
    server = OciAppServer(sample.app, "unused.sock")
    body = await server._handle_request(
        encode_request("5f0c6d7e-8a9b-4c1d-9e2f-3a4b5c6d7e8f", msgpack.packb({"value": "v"}))
    )
    envelope = msgpack.unpackb(body, raw=False)
    assert envelope["error"] is None
    assert msgpack.unpackb(envelope["payload"]) == {"value": "v"}
