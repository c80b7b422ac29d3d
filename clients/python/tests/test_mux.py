"""The execute channel against scripted servers: the upgrade, request
frames, answers split and batched across reads, timeouts and failures."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import pytest
from ociapp_runtime import _mux
from ociapp_runtime._http import Address
from ociapp_runtime._mux import MuxChannel, MuxRefused, MuxUnsupported, encode_fields

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FIELDS = {"path": "/a/b.ociapp", "file": "1:2:3:4"}
UPGRADED = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ociapp-mux/1\r\n\r\n"


def frame(msg: dict) -> bytes:
    body = msgpack.packb(msg)
    return len(body).to_bytes(4, "big") + body


async def read_frame(reader: asyncio.StreamReader) -> dict:
    size = int.from_bytes(await reader.readexactly(4), "big")
    return msgpack.unpackb(await reader.readexactly(size), raw=False)


@pytest.fixture
async def serve(tmp_path: Path):
    servers = []
    heads: list[bytes] = []

    async def start(handler: Handler, *, upgrade: bool = True, answer: bytes = UPGRADED) -> Address:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
                if upgrade:
                    writer.write(answer)
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        sock = tmp_path / f"s{len(servers)}.sock"
        server = await asyncio.start_unix_server(on_conn, str(sock), limit=64 << 20)
        servers.append(server)
        return Address(unix_path=str(sock))

    start.heads = heads  # type: ignore[attr-defined]
    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("size", [0, 255, 256, 65535, 65536])
def test_request_frames_are_the_protocols_maps(
    size: int, recording_channel: Callable[[], tuple[MuxChannel, list[bytes]]],
) -> None:
    """A frame assembled from its parts is the map the protocol names, id first."""

    async def build() -> bytes:
        channel, written = recording_channel()
        call = asyncio.ensure_future(channel.call(encode_fields(FIELDS), b"x" * size))
        await asyncio.sleep(0)
        call.cancel()
        return b"".join(written)

    data = asyncio.run(build())
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    msg = msgpack.unpackb(data[4:], raw=False)
    assert list(msg) == ["id", "path", "file", "payload"]
    assert msg == {"id": 1, **FIELDS, "payload": b"x" * size}


@pytest.mark.parametrize(
    ("left", "sent"),
    [(0.25, 250), (0.0004, 1), (0.0, 0), (-3.0, 0), (2.0005, 2001), (1e300, (2**63 - 1) // 1_000_000)],
)
def test_deadline_millis(left: float, sent: int) -> None:
    """The time left is sent in whole milliseconds rounded up, 0 once it
    is up, and at most what the daemon holds."""

    assert _mux.deadline_millis(left) == sent


@pytest.mark.parametrize("deadlines", [True, False])
def test_request_frames_carry_the_time_left(
    deadlines: bool, recording_channel: Callable[[], tuple[MuxChannel, list[bytes]]],
) -> None:
    """A request's deadline_ms comes last, after payload (and stream), to a
    daemon that applies it; to another the frame is as before."""

    async def build() -> list[dict]:
        channel, written = recording_channel()
        channel._deadlines = deadlines
        channel._streams_offered = True
        deadline = asyncio.get_running_loop().time() + 0.25
        call = asyncio.ensure_future(channel.call(encode_fields(FIELDS), b"x", deadline))
        await asyncio.sleep(0)
        call.cancel()
        stream = await channel.stream(encode_fields(FIELDS), b"y", 4, deadline)
        channel._flush()
        stream.close()
        data = b"".join(written)
        frames = []
        while data:
            size = int.from_bytes(data[:4], "big")
            frames.append(msgpack.unpackb(data[4 : 4 + size], raw=False))
            data = data[4 + size :]
        return frames

    call, stream = asyncio.run(build())
    if deadlines:
        assert list(call) == ["id", "path", "file", "payload", "deadline_ms"]
        assert list(stream) == ["id", "path", "file", "payload", "stream", "deadline_ms"]
        assert 240 <= call["deadline_ms"] <= 250 and 240 <= stream["deadline_ms"] <= 250
    else:
        assert list(call) == ["id", "path", "file", "payload"]
        assert list(stream) == ["id", "path", "file", "payload", "stream"]


@pytest.mark.parametrize("features", ["cancel, stream, deadline", "cancel, stream"])
async def test_deadlines_go_to_a_daemon_that_lists_them(serve, features: str) -> None:
    """The upgrade's Ociapp-Mux-Features says whether requests carry their
    time left; an older daemon is sent no key it may not know."""

    requests: list[dict] = []

    async def handler(reader, writer):
        request = await read_frame(reader)
        requests.append(request)
        writer.write(frame({"id": request["id"], "payload": b"ok"}))
        await reader.read()

    answer = UPGRADED[:-2] + f"Ociapp-Mux-Features: {features}\r\n\r\n".encode()
    channel = await MuxChannel.open(await serve(handler, answer=answer), None, None, 10.0)
    try:
        assert channel.deadlines == ("deadline" in features)
        deadline = asyncio.get_running_loop().time() + 5
        assert (await channel.call(encode_fields(FIELDS), b"x", deadline))["payload"] == b"ok"
    finally:
        await channel.close()
    if "deadline" in features:
        assert 4900 <= requests[0]["deadline_ms"] <= 5000
    else:
        assert "deadline_ms" not in requests[0]


async def test_answers_in_any_order_split_and_batched(serve) -> None:
    async def handler(reader, writer):
        requests = [await read_frame(reader) for _ in range(3)]
        assert [r["payload"] for r in requests] == [b"0", b"1", b"2"]
        answers = b"".join(frame({"id": r["id"], "payload": r["payload"] * 2}) for r in reversed(requests))
        # One write with two frames and half the third, then the rest.
        writer.write(answers[:-5])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(answers[-5:])
        await writer.drain()
        request = await read_frame(reader)
        body = frame({"id": request["id"], "error": msgpack.packb({"code": "overloaded"})})
        for i in range(len(body)):  # a byte at a time
            writer.write(body[i : i + 1])
            await writer.drain()
        await reader.read()

    channel = await MuxChannel.open(await serve(handler), None, None, 10.0)
    try:
        fields = encode_fields(FIELDS)
        results = await asyncio.gather(*(channel.call(fields, str(i).encode()) for i in range(3)))
        assert [r["payload"] for r in results] == [b"00", b"11", b"22"]
        answer = await channel.call(fields, b"e")
        assert msgpack.unpackb(answer["error"]) == {"code": "overloaded"}
        assert channel._pending == {}
    finally:
        await channel.close()


@pytest.mark.parametrize("offered", [True, False])
async def test_a_caller_that_gives_up_cancels_its_request(serve, offered: bool) -> None:
    """A cancelled call sends a cancel frame for its id, to a daemon that
    offers them; to another, the next frame is the next request."""

    frames: list[dict] = []
    got_request = asyncio.Event()

    async def handler(reader, writer):
        frames.append(await read_frame(reader))
        got_request.set()
        request = await read_frame(reader)
        frames.append(request)
        if "payload" in request:
            writer.write(frame({"id": request["id"], "payload": request["payload"]}))
            await writer.drain()
        else:
            last = await read_frame(reader)
            frames.append(last)
            writer.write(frame({"id": last["id"], "payload": last["payload"]}))
            await writer.drain()
        await reader.read()

    answer = UPGRADED[:-2] + b"Ociapp-Mux-Features: cancel\r\n\r\n" if offered else UPGRADED
    channel = await MuxChannel.open(await serve(handler, answer=answer), None, None, 10.0)
    try:
        fields = encode_fields(FIELDS)
        call = asyncio.ensure_future(channel.call(fields, b"blocks"))
        await got_request.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (await channel.call(fields, b"next"))["payload"] == b"next"
        sent = [{k: v for k, v in f.items() if k in ("id", "cancel", "payload")} for f in frames]
        if offered:
            assert sent == [{"id": 1, "payload": b"blocks"}, {"id": 1, "cancel": True}, {"id": 2, "payload": b"next"}]
        else:
            assert sent == [{"id": 1, "payload": b"blocks"}, {"id": 2, "payload": b"next"}]
    finally:
        await channel.close()


async def test_large_payloads_both_ways(serve) -> None:
    async def handler(reader, writer):
        request = await read_frame(reader)
        writer.write(frame({"id": request["id"], "payload": request["payload"]}))
        await writer.drain()
        await reader.read()

    channel = await MuxChannel.open(await serve(handler), None, None, 10.0)
    try:
        payload = bytes(range(256)) * (12 << 12)  # 12 MiB: past the write buffer's limit
        assert (await channel.call(encode_fields(FIELDS), payload))["payload"] == payload
    finally:
        await channel.close()


async def test_unanswered_request_times_out(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_mux, "_TICK", 0.05)

    async def handler(reader, writer):
        await read_frame(reader)  # never answered
        request = await read_frame(reader)
        writer.write(frame({"id": request["id"], "payload": b"late"}))
        await reader.read()

    channel = await MuxChannel.open(await serve(handler), None, None, 0.2)
    try:
        fields = encode_fields(FIELDS)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            # Bounded, so that a missing timeout fails (on the time taken).
            await asyncio.wait_for(channel.call(fields, b"lost"), 5)
        assert 0.2 <= loop.time() - start < 2
        assert channel.broken is None
        assert (await channel.call(fields, b"next"))["payload"] == b"late"
        assert channel._pending == {}
    finally:
        await channel.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"\x00\x00\x00\x00", "frame of 0 bytes"),
        (b"\x02\x00\x00\x00", "frame of 33554432 bytes"),
        (frame({"payload": b"no id"}), "'id'"),
        (b"\x00\x00\x00\x01\xc1", "FormatError"),
        (b"\x00\x00\x00", "closed the execute channel"),
    ],
)
async def test_bad_answers_break_the_channel(serve, answer: bytes, error: str) -> None:
    async def handler(reader, writer):
        await read_frame(reader)
        writer.write(answer)
        await writer.drain()

    channel = await MuxChannel.open(await serve(handler), None, None, 10.0)
    try:
        with pytest.raises((OSError, ValueError, KeyError)) as info:
            await channel.call(encode_fields(FIELDS), b"x")
        assert error in repr(info.value)
        assert channel.broken is info.value
        with pytest.raises(type(info.value)):
            await channel.call(encode_fields(FIELDS), b"x")
    finally:
        await channel.close()


async def test_closed_channel_fails_its_calls(serve) -> None:
    async def handler(reader, writer):
        await reader.read()

    channel = await MuxChannel.open(await serve(handler), None, None, 10.0)
    call = asyncio.ensure_future(channel.call(encode_fields(FIELDS), b"x"))
    await asyncio.sleep(0.01)
    await channel.close()
    with pytest.raises(ConnectionError, match="the execute channel was closed"):
        await call


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}", MuxUnsupported),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", MuxUnsupported),
        (b'HTTP/1.1 401 Unauthorized\r\nContent-Length: 23\r\n\r\n{"code":"unauthorized"}', MuxRefused),
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", MuxRefused),
        (b"SSH-2.0-OpenSSH\r\n\r\n", ValueError),
        (b"HTTP/1.1 101 Switch", ConnectionError),
        (b"X" * (70 << 10), ValueError),
    ],
)
async def test_refused_upgrades(serve, answer: bytes, error: type) -> None:
    async def handler(reader, writer):
        writer.write(answer)
        await writer.drain()

    with pytest.raises(error) as info:
        await MuxChannel.open(await serve(handler, upgrade=False), "t0k", None, 10.0)
    if error is MuxRefused and b"401" in answer:
        assert info.value.status == 401
        assert info.value.body == {"code": "unauthorized"}


async def test_upgrade_request_carries_the_token(serve) -> None:
    async def handler(reader, writer):
        # The answer and a first frame in one write.
        writer.write(UPGRADED + frame({"id": 99, "payload": b"unasked"}))
        request = await read_frame(reader)
        writer.write(frame({"id": request["id"], "payload": b"ok"}))
        await reader.read()

    address = await serve(handler, upgrade=False)
    channel = await MuxChannel.open(address, "t0k", None, 10.0)
    try:
        assert (await channel.call(encode_fields(FIELDS), b"x"))["payload"] == b"ok"
    finally:
        await channel.close()
    head = serve.heads[0].decode()
    assert head.startswith("GET /v1/mux HTTP/1.1\r\n")
    assert "Upgrade: ociapp-mux/1\r\n" in head
    assert "Authorization: Bearer t0k\r\n" in head
