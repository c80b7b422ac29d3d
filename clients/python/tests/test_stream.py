"""Streams on the execute channel against a scripted daemon: frames, credit
accounting, the bounded buffer, cancellation, protocol errors, and the
fallback to one execute for a daemon without streams."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import pytest
from ociapp_runtime import (
    DaemonUnavailableError,
    OCIAppRuntimeError,
    OverloadedError,
    RemoteExecutionError,
    RequestTimeoutError,
    Runtime,
)
from ociapp_runtime._http import Address
from ociapp_runtime._mux import MuxAnswerError, MuxChannel, encode_fields

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FIELDS = {"path": "/a/b.ociapp", "file": "1:2:3:4"}
HEALTH = b'{"status": "ok", "api": "v1"}'


def frame(msg: dict) -> bytes:
    body = msgpack.packb(msg)
    return len(body).to_bytes(4, "big") + body


def item(rid: int, value: dict) -> bytes:
    return frame({"id": rid, "item": msgpack.packb(value)})


async def read_frame(reader: asyncio.StreamReader) -> dict:
    size = int.from_bytes(await reader.readexactly(4), "big")
    return msgpack.unpackb(await reader.readexactly(size), raw=False)


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


@pytest.fixture
async def daemon(tmp_path: Path):
    """Starts a scripted daemon on a Unix socket: it answers health checks,
    upgrades /v1/mux (offering ``features``; None: no channel, 404) to run
    ``handler``, and answers HTTP executes by path with ``handler_http``."""

    servers = []

    async def start(
        handler: Handler,
        *,
        features: str | None = "cancel, stream",
        handler_http: Callable[[bytes], Awaitable[bytes]] | None = None,
    ) -> Address:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    if head.startswith(b"GET /healthz "):
                        writer.write(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(HEALTH), HEALTH)
                        )
                    elif head.startswith(b"POST /v1/local/execute?"):
                        # An HTTP execute (a daemon without the channel): the
                        # handler answers its body.
                        size = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                        body = await handler_http(await reader.readexactly(size))
                        writer.write(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                        )
                    elif head.startswith(b"GET /v1/mux ") and features is not None:
                        offer = f"Ociapp-Mux-Features: {features}\r\n".encode() if features else b""
                        writer.write(
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                            b"Upgrade: ociapp-mux/1\r\n" + offer + b"\r\n"
                        )
                        await handler(reader, writer)
                        return
                    else:
                        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        sock = tmp_path / f"d{len(servers)}.sock"
        server = await asyncio.start_unix_server(on_conn, str(sock))
        servers.append(server)
        return Address(unix_path=str(sock))

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    # A scripted daemon never opens it: the client only stats it.
    path = tmp_path / "app-0.1.0.ociapp"
    path.write_bytes(b"not opened")
    return path


def test_stream_and_credit_frames_are_the_protocols_maps(
    recording_channel: Callable[[], tuple[MuxChannel, list[bytes]]],
) -> None:
    """A stream request is an execute request with the initial credit under
    "stream"; a credit frame is {"id", "credit"}; both id first."""

    async def build() -> list[bytes]:
        channel, written = recording_channel()
        channel._streams_offered = True
        stream = await channel.stream(encode_fields(FIELDS), b"x" * 300, 16)
        channel._credit(stream.id, 8)
        channel._credit(stream.id, 300)
        channel._flush()
        return written

    first, credits = asyncio.run(build())
    assert int.from_bytes(first[:4], "big") == len(first) - 4
    msg = msgpack.unpackb(first[4:], raw=False)
    assert list(msg) == ["id", "path", "file", "payload", "stream"]
    assert msg == {"id": 1, **FIELDS, "payload": b"x" * 300, "stream": 16}
    grants = []
    while credits:
        size = int.from_bytes(credits[:4], "big")
        grants.append(msgpack.unpackb(credits[4 : 4 + size]))
        credits = credits[4 + size :]
    assert grants == [{"id": 1, "credit": 8}, {"id": 1, "credit": 300}]
    assert [list(g) for g in grants] == [["id", "credit"]] * 2


async def test_credit_goes_back_in_half_windows(daemon) -> None:
    """The daemon may send a window of items at once; credit comes back
    8 at a time as they are taken, and none once the stream has ended."""

    credits: list[dict] = []
    sent_window = asyncio.Event()

    async def handler(reader, writer):
        request = await read_frame(reader)
        rid = request["id"]
        assert request["stream"] == 16
        writer.write(b"".join(item(rid, {"i": i}) for i in range(16)))
        sent_window.set()
        credits.append(await read_frame(reader))
        credits.append(await read_frame(reader))
        writer.write(b"".join(item(rid, {"i": i}) for i in range(16, 32)) + frame({"id": rid, "end": True}))
        while True:
            credits.append(await read_frame(reader))

    channel = await MuxChannel.open(await daemon(handler), None, None, 10.0)
    try:
        stream = await channel.stream(encode_fields(FIELDS), b"go")
        await sent_window.wait()
        await until(lambda: stream.buffered[0] == 16, "the window arrives")
        size = len(msgpack.packb({"i": 0}))
        assert (stream.buffered, stream.credit) == ((16, 16 * size), 0)
        taken = [await stream.next() for _ in range(7)]
        await asyncio.sleep(0.05)
        assert credits == []  # 7 taken: less than half a window
        taken.append(await stream.next())
        await until(lambda: len(credits) == 1, "a credit after 8 taken")
        assert credits == [{"id": stream.id, "credit": 8}]
        assert (stream.buffered, stream.credit) == ((8, 8 * size), 8)
        taken += [await stream.next() for _ in range(8)]
        await until(lambda: stream._end is not None, "the rest and the end arrive")
        # Never more than the window held.
        assert stream.buffered == (16, 16 * size)
        while (value := await stream.next()) is not None:
            taken.append(value)
        assert [msgpack.unpackb(t) for t in taken] == [{"i": i} for i in range(32)]
        assert await stream.next() is None
        await asyncio.sleep(0.05)
        # Items taken after the end grant nothing.
        assert credits == [{"id": stream.id, "credit": 8}, {"id": stream.id, "credit": 8}]
        assert channel._streams == {}
    finally:
        await channel.close()


async def test_a_stopped_consumer_holds_at_most_the_window(daemon) -> None:
    """A consumer that stops taking items grants no credit, so the daemon
    can send no more than the window; closing the stream cancels it and
    drops what it held."""

    frames: list[dict] = []

    async def handler(reader, writer):
        request = await read_frame(reader)
        writer.write(b"".join(item(request["id"], {"i": i}) for i in range(request["stream"])))
        while True:
            frames.append(await read_frame(reader))

    channel = await MuxChannel.open(await daemon(handler), None, None, 10.0)
    try:
        stream = await channel.stream(encode_fields(FIELDS), b"go", 8)
        assert msgpack.unpackb(await stream.next()) == {"i": 0}
        assert msgpack.unpackb(await stream.next()) == {"i": 1}
        assert msgpack.unpackb(await stream.next()) == {"i": 2}
        await until(lambda: stream.buffered[0] == 5, "the window arrives")
        await asyncio.sleep(0.05)
        assert frames == []  # 3 of 8 taken: no credit
        assert stream.credit == 0
        stream.close()
        assert stream.buffered == (0, 0)
        await until(lambda: len(frames) == 1, "a cancel frame")
        assert frames == [{"id": stream.id, "cancel": True}]
        with pytest.raises(ConnectionError, match="closed"):
            await stream.next()
        stream.close()  # again: nothing more sent
        await asyncio.sleep(0.05)
        assert len(frames) == 1
    finally:
        await channel.close()


async def test_an_item_beyond_the_credit_breaks_the_channel(daemon) -> None:
    """An item beyond the credit granted is a protocol error: the channel
    fails as for a malformed frame, with every call and stream on it."""

    async def handler(reader, writer):
        request = await read_frame(reader)
        await read_frame(reader)  # an execute, never answered
        writer.write(b"".join(item(request["id"], {"i": i}) for i in range(5)))
        await reader.read()

    channel = await MuxChannel.open(await daemon(handler), None, None, 10.0)
    try:
        stream = await channel.stream(encode_fields(FIELDS), b"go", 4)
        call = asyncio.ensure_future(channel.call(encode_fields(FIELDS), b"x"))
        with pytest.raises(ValueError, match="beyond the credit") as info:
            await call
        assert channel.broken is info.value
        # The items within the credit are still taken, then the error.
        assert stream.buffered[0] == 4
        for i in range(4):
            assert msgpack.unpackb(await stream.next()) == {"i": i}
        with pytest.raises(ValueError, match="beyond the credit"):
            await stream.next()
    finally:
        await channel.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"item": "text"}, "not bin"),
        ({"end": 1}, "end=1"),
        ({"error": {"code": "internal"}}, "not bin"),
        ({"credit": 3}, "none of item, end, error"),
    ],
)
async def test_malformed_stream_frames_break_the_channel(daemon, answer: dict, error: str) -> None:
    async def handler(reader, writer):
        request = await read_frame(reader)
        writer.write(frame({"id": request["id"], **answer}))
        await reader.read()

    channel = await MuxChannel.open(await daemon(handler), None, None, 10.0)
    try:
        stream = await channel.stream(encode_fields(FIELDS), b"go")
        with pytest.raises(ValueError, match=error):
            await stream.next()
        assert isinstance(channel.broken, ValueError)
    finally:
        await channel.close()


async def test_a_wait_beyond_the_timeout_cancels_the_stream(daemon) -> None:
    frames: list[dict] = []

    async def handler(reader, writer):
        request = await read_frame(reader)
        writer.write(item(request["id"], {"i": 0}))
        while True:
            frames.append(await read_frame(reader))

    channel = await MuxChannel.open(await daemon(handler), None, None, 10.0)
    try:
        stream = await channel.stream(encode_fields(FIELDS), b"go")
        assert msgpack.unpackb(await stream.next(0.2)) == {"i": 0}
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await stream.next(0.2)
        assert 0.2 <= loop.time() - start < 2
        await until(lambda: len(frames) == 1, "a cancel frame")
        assert frames == [{"id": stream.id, "cancel": True}]
        assert channel.broken is None and channel._streams == {}
    finally:
        await channel.close()


async def test_an_error_answer_ends_the_stream_after_its_items(daemon) -> None:
    async def handler(reader, writer):
        request = await read_frame(reader)
        body = msgpack.packb({"code": "app_error", "message": "no"})
        writer.write(item(request["id"], {"i": 0}) + frame({"id": request["id"], "error": body}))
        await reader.read()

    channel = await MuxChannel.open(await daemon(handler), None, None, 10.0)
    try:
        stream = await channel.stream(encode_fields(FIELDS), b"go")
        assert msgpack.unpackb(await stream.next()) == {"i": 0}
        with pytest.raises(MuxAnswerError) as info:
            await stream.next()
        assert msgpack.unpackb(info.value.error) == {"code": "app_error", "message": "no"}
        assert channel.broken is None
    finally:
        await channel.close()


# Runtime.stream.


def streaming(script: Callable[[int, asyncio.StreamWriter], bytes], frames: list[dict]) -> Handler:
    """A daemon handler that answers each stream request with script's
    frames and records every frame it reads."""

    async def handler(reader, writer):
        while True:
            msg = await read_frame(reader)
            frames.append(msg)
            if "payload" in msg:
                writer.write(script(msg["id"], msg))
                await writer.drain()

    return handler


async def test_runtime_stream_yields_items_then_raises_the_app_error(daemon, artifact: Path) -> None:
    frames: list[dict] = []

    def script(rid, msg):
        error = msgpack.packb(
            {"code": "app_error", "message": "it broke", "error_type": "Boom", "details": {"at": 2}}
        )
        return item(rid, {"i": 0}) + item(rid, {"i": 1}) + frame({"id": rid, "error": error})

    address = await daemon(streaming(script, frames))
    async with Runtime(url=f"unix://{address.unix_path}") as runtime:
        items = []
        with pytest.raises(RemoteExecutionError) as info:
            async for value in runtime.stream(artifact, {"count": 2}):
                items.append(value)
        assert items == [{"i": 0}, {"i": 1}]
        assert (info.value.error_type, info.value.message, info.value.details) == ("Boom", "it broke", {"at": 2})
    (request,) = frames
    assert request["stream"] == 16 and request["path"] == str(artifact)
    assert msgpack.unpackb(request["payload"]) == {"count": 2}


async def test_runtime_stream_errors_before_items(daemon, artifact: Path) -> None:
    def script(rid, msg):
        return frame({"id": rid, "error": msgpack.packb({"code": "overloaded", "message": "busy", "queued": 3})})

    address = await daemon(streaming(script, []))
    async with Runtime(url=f"unix://{address.unix_path}") as runtime:
        with pytest.raises(OverloadedError) as info:
            async for _ in runtime.stream(artifact, {}):
                pytest.fail("no item was sent")
        assert info.value.info["queued"] == 3
        with pytest.raises(ValueError, match="window"):
            runtime.stream(artifact, {}, window=0)


async def test_runtime_stream_item_beyond_credit(daemon, artifact: Path) -> None:
    def script(rid, msg):
        return b"".join(item(rid, {"i": i}) for i in range(msg["stream"] + 1))

    address = await daemon(streaming(script, []))
    async with Runtime(url=f"unix://{address.unix_path}") as runtime:
        items = []
        with pytest.raises(DaemonUnavailableError, match="beyond the credit"):
            async for value in runtime.stream(artifact, {}, window=2):
                items.append(value)
        assert items == [{"i": 0}, {"i": 1}]


@pytest.mark.parametrize("how", ["break", "aclose", "cancel", "timeout", "wait"])
async def test_leaving_a_stream_early_cancels_it(daemon, artifact: Path, how: str) -> None:
    """Breaking out of the loop, closing the iterator, cancelling its task,
    or a wait beyond the timeout sends a cancel frame for the stream; the
    next stream on the channel works."""

    frames: list[dict] = []

    def script(rid, msg):
        if msgpack.unpackb(msg["payload"]) == {"op": "forever"}:
            return item(rid, {"i": 0})  # then nothing
        return item(rid, {"i": 0}) + frame({"id": rid, "end": True})

    address = await daemon(streaming(script, frames))
    async with Runtime(url=f"unix://{address.unix_path}") as runtime:
        if how == "break":
            # The iterator, dropped when the loop ends, is closed then.
            async for value in runtime.stream(artifact, {"op": "forever"}):
                assert value == {"i": 0}
                break
        elif how == "aclose":
            stream = runtime.stream(artifact, {"op": "forever"})
            assert await anext(stream) == {"i": 0}
            await stream.aclose()
        elif how == "cancel":
            got = asyncio.Event()

            async def consume():
                async for _ in runtime.stream(artifact, {"op": "forever"}):
                    got.set()

            task = asyncio.create_task(consume())
            await got.wait()
            await asyncio.sleep(0.05)  # waiting for the second item
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif how == "timeout":
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    async for _ in runtime.stream(artifact, {"op": "forever"}):
                        pass
        else:
            runtime._execute_timeout = 0.2
            with pytest.raises(RequestTimeoutError, match="sent no item"):
                async for _ in runtime.stream(artifact, {"op": "forever"}):
                    pass
        await until(lambda: any("cancel" in f for f in frames), "a cancel frame")
        assert [f for f in frames if "payload" not in f] == [{"id": 1, "cancel": True}]
        assert runtime._mux is not None and runtime._mux._streams == {}
        assert [value async for value in runtime.stream(artifact, {"op": "once"})] == [{"i": 0}]


@pytest.mark.parametrize("features", ["cancel", "", None])
async def test_without_the_stream_feature_one_execute_is_the_only_item(
    daemon, artifact: Path, features: str | None
) -> None:
    """A daemon that does not offer streams gets one ordinary execute, on
    its execute channel or, without one, over HTTP; its response is the
    stream's only item."""

    frames: list[dict] = []
    bodies: list[bytes] = []

    def script(rid, msg):
        return frame({"id": rid, "payload": msgpack.packb({"answer": 42})})

    async def http(body: bytes) -> bytes:
        bodies.append(body)
        return msgpack.packb({"answer": 43})

    address = await daemon(streaming(script, frames), features=features, handler_http=http)
    async with Runtime(url=f"unix://{address.unix_path}") as runtime:
        items = [value async for value in runtime.stream(artifact, {"q": 1})]
    if features is None:
        assert (items, frames) == ([{"answer": 43}], [])
        assert [msgpack.unpackb(b) for b in bodies] == [{"q": 1}]
    else:
        assert (items, bodies) == ([{"answer": 42}], [])
        (request,) = frames
        assert "stream" not in request
        assert msgpack.unpackb(request["payload"]) == {"q": 1}


async def test_stream_requires_start(artifact: Path) -> None:
    with pytest.raises(OCIAppRuntimeError, match="must be started"):
        Runtime().stream(artifact, {})
