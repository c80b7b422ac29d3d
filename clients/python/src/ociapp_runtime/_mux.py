"""The daemon's execute channel (docs/daemon.md, "Execute channel").

One connection, switched by an HTTP Upgrade to frames of a 4-byte
big-endian length and a msgpack map: requests are written as they come and
answered, by id, as they complete, so many run at once on one connection
and none costs an HTTP exchange.

The channel is an asyncio Protocol, so a response costs no task of its
own: the bytes read are parsed where they arrive (many frames per read
under load) and each caller's future is resolved there. Request frames
are assembled from pre-encoded parts, and those written while others are
in flight are sent together, once per event-loop iteration.
"""

import asyncio
import contextlib
import json
import math
import ssl
import struct
from collections import deque
from typing import Any

import msgpack

from ._http import Address

__all__ = [
    "DEFAULT_STREAM_WINDOW",
    "MuxAnswerError",
    "MuxChannel",
    "MuxRefused",
    "MuxStream",
    "MuxUnsupported",
    "deadline_millis",
    "encode_fields",
]

_PROTOCOL = "ociapp-mux/1"
_MAX_HEADER_BYTES = 64 << 10
# The largest response frame: a container's largest payload and room for
# the envelope.
_MAX_FRAME = (16 << 20) + (8 << 10)
# Written frames beyond this wait for the socket to take them.
_DRAIN_ABOVE = 1 << 20
# How often requests in flight are checked against the timeout: a request
# fails between the timeout and this much later.
_TICK = 1.0

# A request frame: length, map header, "id" and the id as a uint64, the
# fields naming the artifact (encode_fields), then "payload" and its bin
# header and bytes.
_FRAME_HEAD = struct.Struct(">IB3sBQ")
_ID_KEY = b"\xa2id"
_PAYLOAD_BIN8 = struct.Struct(">8sBB")
_PAYLOAD_BIN16 = struct.Struct(">8sBH")
_PAYLOAD_BIN32 = struct.Struct(">8sBI")
_PAYLOAD_KEY = b"\xa7payload"
_FRAME_SIZE = struct.Struct(">I").unpack_from
# A cancel frame: length 21, {"id": uint64, "cancel": true}, for a daemon
# that offers cancel frames (its 101 names them in Ociapp-Mux-Features).
_CANCEL_FRAME = struct.Struct(">IB3sBQ7sB")
_CANCEL_KEY = b"\xa6cancel"
# A credit frame's head, {"id": uint64, "credit": ...}, the credit's uint
# following it.
_CREDIT_HEAD = struct.Struct(">IB3sBQ7s")
_CREDIT_KEY = b"\xa6credit"
_STREAM_KEY = b"\xa6stream"
# A request's time left, for a daemon that applies it (its 101 names
# "deadline" in Ociapp-Mux-Features): docs/daemon.md, "Deadlines".
_DEADLINE_KEY = b"\xabdeadline_ms"
# The most milliseconds sent: what the daemon's Go Duration holds.
_MAX_DEADLINE_MS = (2**63 - 1) // 1_000_000

# How many items a stream holds received and not yet taken unless asked
# otherwise: the initial credit, and the most buffered (protocol/stream.go's
# DefaultStreamWindow).
DEFAULT_STREAM_WINDOW = 16


def deadline_millis(left: float) -> int:
    """The milliseconds a request with ``left`` seconds left is sent with:
    rounded up, so that 0.4 ms left is not sent as a time already up, 0
    once none is left, and at most what the daemon holds."""

    if not left > 0:
        return 0
    return min(math.ceil(left * 1000), _MAX_DEADLINE_MS)


def encode_fields(fields: dict[str, str]) -> tuple[int, bytes]:
    """Encodes the fields that name a request's artifact once, for every
    request that names it: the map header of the whole request and the
    fields' msgpack keys and values."""

    # A request's map is a fixmap: id, payload and, for a stream, stream,
    # and deadline_ms beside the fields.
    if len(fields) > 11:
        raise ValueError("a request names its artifact with at most 11 fields")
    packer = msgpack.Packer(use_bin_type=True)
    pairs = b"".join(packer.pack(key) + packer.pack(value) for key, value in fields.items())
    return 0x80 | (len(fields) + 2), pairs


class MuxUnsupported(Exception):
    """The daemon (or something between) has no execute channel."""


class MuxRefused(Exception):
    """The daemon refused the upgrade: ``status`` and the error ``body``."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class MuxAnswerError(Exception):
    """A stream ended with the daemon's error answer: ``error`` is the
    error body (msgpack), as an execute's error answer holds it."""

    def __init__(self, error: bytes) -> None:
        super().__init__("the stream ended with an error answer")
        self.error = error


class MuxChannel(asyncio.Protocol):
    """An open execute channel. ``call`` may be awaited by many tasks at
    once; one that is not answered within ``timeout`` seconds raises
    TimeoutError."""

    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._next = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._error: BaseException | None = None
        # Bytes read and not yet parsed: the upgrade's answer, then a
        # partial frame.
        self._buf = bytearray()
        self._upgraded = False
        self._answer: asyncio.Future[tuple[int, dict[str, str], bytes]] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        # Frame parts written while others were in flight, sent at the end
        # of this event-loop iteration.
        self._out: list[bytes] = []
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        # The timeout's check: marks of (time, last id sent by then), the
        # oldest first, while requests are in flight.
        self._marks: list[tuple[float, int]] = []
        self._ticker: asyncio.TimerHandle | None = None
        # Whether the daemon takes cancel frames, and stream requests.
        self._cancels = False
        self._streams_offered = False
        self._deadlines = False
        # The streams running, by id: answered with items, not one frame.
        self._streams: dict[int, MuxStream] = {}

    @classmethod
    async def open(
        cls, address: Address, token: str | None, ssl_context: ssl.SSLContext | None, timeout: float
    ) -> "MuxChannel":
        loop = asyncio.get_running_loop()
        if address.unix_path is not None:
            transport, channel = await loop.create_unix_connection(lambda: cls(timeout), address.unix_path)
        else:
            transport, channel = await loop.create_connection(
                lambda: cls(timeout), address.host, address.port, ssl=ssl_context
            )
        try:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            transport.write(
                f"GET /v1/mux HTTP/1.1\r\nHost: {address.host_header}\r\nConnection: Upgrade\r\n"
                f"Upgrade: {_PROTOCOL}\r\n{auth}\r\n".encode()
            )
            status, headers, body = await channel._answer
            if status != 101:
                if status in (404, 405) or status < 300:
                    raise MuxUnsupported(f"HTTP {status}")
                answer: Any = body
                with contextlib.suppress(ValueError):
                    answer = json.loads(body)
                raise MuxRefused(status, answer)
        except BaseException:
            transport.close()
            raise
        transport.set_write_buffer_limits(high=_DRAIN_ABOVE)
        return channel

    @property
    def broken(self) -> BaseException | None:
        return self._error

    @property
    def streams(self) -> bool:
        """Whether the daemon takes stream requests (its 101 names
        ``stream`` in Ociapp-Mux-Features)."""

        return self._streams_offered

    @property
    def deadlines(self) -> bool:
        """Whether the daemon applies a request's time left (its 101 names
        ``deadline`` in Ociapp-Mux-Features)."""

        return self._deadlines

    def _deadline_part(self, deadline: float | None) -> bytes:
        """The "deadline_ms" key and value of a request whose caller's time
        is up at ``deadline`` (the event loop's time), for a daemon that
        applies it; else nothing, so an older daemon gets no key it may not
        know."""

        if deadline is None or not self._deadlines:
            return b""
        return _DEADLINE_KEY + msgpack.packb(deadline_millis(deadline - self._loop.time()))

    async def stream(
        self,
        fields: tuple[int, bytes],
        payload: bytes,
        window: int = DEFAULT_STREAM_WINDOW,
        deadline: float | None = None,
    ) -> "MuxStream":
        """Sends one request asking for its response as a stream, with
        ``window`` items of initial credit, and returns the stream. Only
        for a daemon that offers streams (``streams``). ``deadline``, the
        event loop's time at which the caller's time is up, is sent as the
        time left to a daemon that applies it."""

        if self._error is not None:
            raise self._error
        if not self._streams_offered:
            raise ValueError("the daemon does not take stream requests on its execute channel")
        if window < 1:
            raise ValueError(f"a stream's window must be at least 1, got {window}")
        self._next = rid = self._next + 1
        size = len(payload)
        tail = _payload_head(size)
        credit = _STREAM_KEY + msgpack.packb(window)
        late = self._deadline_part(deadline)
        head, pairs = fields
        length = 13 + len(pairs) + len(tail) + size + len(credit) + len(late)
        head += 2 if late else 1
        frame = (_FRAME_HEAD.pack(length, head, _ID_KEY, 0xCF, rid), pairs, tail, payload, credit, late)
        stream = MuxStream(self, rid, window)
        self._streams[rid] = stream
        self._write(frame)
        if self._paused:
            try:
                await self._drained()
            except BaseException:
                stream.close()
                raise
        return stream

    def _write(self, parts: tuple[bytes, ...]) -> None:
        """Writes a frame now when nothing else waits to be written, else
        with the others at the end of this event-loop iteration."""

        out = self._out
        if not out:
            if not self._pending:
                assert self._transport is not None
                self._transport.write(b"".join(parts))
                return
            self._loop.call_soon(self._flush)
        out.extend(parts)

    def _credit(self, rid: int, credit: int) -> None:
        if self._error is not None or self._transport is None:
            return
        value = msgpack.packb(credit)
        self._out.append(_CREDIT_HEAD.pack(20 + len(value), 0x82, _ID_KEY, 0xCF, rid, _CREDIT_KEY) + value)
        if len(self._out) == 1:
            self._loop.call_soon(self._flush)

    async def call(
        self, fields: tuple[int, bytes], payload: bytes, deadline: float | None = None
    ) -> dict[str, Any]:
        """Sends one request (``fields``, from encode_fields, name its
        artifact) and returns the response map: ``payload`` or ``error``
        (an error body, msgpack). ``deadline``, the event loop's time at
        which the caller's time is up, is sent as the time left to a
        daemon that applies it."""

        if self._error is not None:
            raise self._error
        self._next = rid = self._next + 1
        size = len(payload)
        tail = _payload_head(size)
        head, pairs = fields
        length = 13 + len(pairs) + len(tail) + size
        if deadline is not None and self._deadlines:
            late = self._deadline_part(deadline)
            length += len(late)
            frame: tuple[bytes, ...] = (
                _FRAME_HEAD.pack(length, head + 1, _ID_KEY, 0xCF, rid), pairs, tail, payload, late
            )
        else:
            frame = (_FRAME_HEAD.pack(length, head, _ID_KEY, 0xCF, rid), pairs, tail, payload)
        pending = self._pending
        fut = self._loop.create_future()
        out = self._out
        if not pending and not out:
            # Nothing else in flight: send it now.
            assert self._transport is not None
            self._transport.write(b"".join(frame))
        else:
            if not out:
                self._loop.call_soon(self._flush)
            out.extend(frame)
        pending[rid] = fut
        if self._ticker is None:
            self._marks.append((self._loop.time(), rid))
            self._ticker = self._loop.call_later(_TICK, self._tick)
        try:
            if self._paused:
                await self._drained()
            return await fut
        except BaseException as exc:
            # Failed or given up: a late answer is dropped. A caller that
            # gave up (its task cancelled, e.g. by asyncio.timeout) has
            # the daemon cancel the request in its container.
            if pending.pop(rid, None) is not None and isinstance(exc, asyncio.CancelledError):
                self._cancel(rid)
            raise

    def _cancel(self, rid: int) -> None:
        if not self._cancels or self._error is not None or self._transport is None:
            return
        self._out.append(_CANCEL_FRAME.pack(21, 0x82, _ID_KEY, 0xCF, rid, _CANCEL_KEY, 0xC3))
        if len(self._out) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out = self._out
        if out and self._error is None and self._transport is not None:
            self._transport.write(b"".join(out))
        out.clear()

    async def _drained(self) -> None:
        while self._paused and self._error is None:
            if self._writable is None:
                self._writable = self._loop.create_future()
            await asyncio.shield(self._writable)

    def _tick(self) -> None:
        """Fails the requests in flight longer than the timeout."""

        now = self._loop.time()
        marks = self._marks
        pending = self._pending
        expired = 0
        while marks and marks[0][0] + self._timeout <= now:
            expired = marks.pop(0)[1]
        if expired:
            for rid in [rid for rid in pending if rid <= expired]:
                fut = pending.pop(rid)
                if not fut.done():
                    fut.set_exception(TimeoutError())
        if pending:
            if not marks or marks[-1][1] != self._next:
                marks.append((now, self._next))
            self._ticker = self._loop.call_later(_TICK, self._tick)
        else:
            marks.clear()
            self._ticker = None

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if not self._upgraded:
            self._buf += data
            self._parse_answer()
            if not self._upgraded or not self._buf:
                return
            data = bytes(self._buf)
            self._buf.clear()
        buf = self._buf
        if buf:
            buf += data
            data = buf  # type: ignore[assignment]
        end = len(data)
        pos = 0
        pending = self._pending
        try:
            while end - pos >= 4:
                size = _FRAME_SIZE(data, pos)[0]
                if size == 0 or size > _MAX_FRAME:
                    raise ConnectionError(f"the daemon sent a frame of {size} bytes")
                stop = pos + 4 + size
                if stop > end:
                    break
                msg = msgpack.unpackb(data[pos + 4 : stop], raw=False, strict_map_key=False)
                fut = pending.pop(msg["id"], None)
                if fut is not None:
                    if not fut.done():
                        fut.set_result(msg)
                elif self._streams:
                    stream = self._streams.get(msg["id"])
                    if stream is not None:
                        stream._deliver(msg)
                pos = stop
        except (OSError, ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            self._fail(exc)
            assert self._transport is not None
            self._transport.close()
            return
        if data is buf:
            del buf[:pos]
        elif pos < end:
            buf += memoryview(data)[pos:]

    def _parse_answer(self) -> None:
        """Parses the answer to the upgrade once it is all in."""

        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEADER_BYTES:
                self._answered_with(ValueError("the daemon's answer to the upgrade has headers beyond 64 KiB"))
            return
        lines = buf[:end].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            self._answered_with(ValueError(f"the daemon answered the upgrade with {lines[0]!r}"))
            return
        if status == 101:
            features = [
                token.strip().lower()
                for line in lines[1:]
                if line.lower().startswith("ociapp-mux-features:")
                for token in line.split(":", 1)[1].split(",")
            ]
            self._cancels = "cancel" in features
            self._streams_offered = "stream" in features
            self._deadlines = "deadline" in features
            del buf[: end + 4]
            self._upgraded = True
            if not self._answer.done():
                self._answer.set_result((status, {}, b""))
            return
        headers = dict((k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln))
        try:
            length = int(headers.get("content-length", "0") or 0)
        except ValueError:
            length = 0
        body = b""
        if 0 < length <= _MAX_HEADER_BYTES:
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
        if not self._answer.done():
            self._answer.set_result((status, headers, body))

    def _answered_with(self, exc: BaseException) -> None:
        if not self._answer.done():
            self._answer.set_exception(exc)
        assert self._transport is not None
        self._transport.close()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answer.done():
            self._answer.set_exception(
                ConnectionError(f"the daemon closed the connection before answering the upgrade: {exc!r}")
                if exc is not None
                else ConnectionError("the daemon closed the connection before answering the upgrade")
            )
        self._fail(ConnectionError("the daemon closed the execute channel") if exc is None else exc)
        self.resume_writing()
        if not self._lost.done():
            self._lost.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._out.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._marks.clear()
        pending = list(self._pending.values())
        self._pending.clear()
        for fut in pending:
            if not fut.done():
                fut.set_exception(self._error)
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream._finish(self._error)

    async def close(self) -> None:
        self._fail(ConnectionError("the execute channel was closed"))
        if self._transport is not None:
            self._transport.close()
            await self._lost


# The end of a stream that ended with its last item.
_DONE = object()


class MuxStream:
    """A stream request's answer: its items in order, as the daemon sends
    them under the credit this side grants. At most ``window`` items are
    held received and not yet taken; credit goes back in half windows as
    ``next`` takes them, so a consumer that stops calling ``next`` stops
    the handler. ``close`` cancels a stream still running."""

    def __init__(self, channel: MuxChannel, rid: int, window: int) -> None:
        self._channel = channel
        self.id = rid
        self.window = window
        self._items: deque[bytes] = deque()
        self._bytes = 0
        # Items the daemon may still send, and items taken and not yet
        # granted back.
        self._credit = window
        self._taken = 0
        # _DONE, the error that ended the stream, or None while it runs.
        self._end: object = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def buffered(self) -> tuple[int, int]:
        """The items received and not yet taken, and their total size in bytes."""

        return len(self._items), self._bytes

    @property
    def credit(self) -> int:
        """How many more items the daemon may send before it gets credit."""

        return self._credit

    async def next(self, timeout: float | None = None) -> bytes | None:
        """Returns the next item, or None after the last. A stream that
        failed raises, after its items: MuxAnswerError for the daemon's
        error answer, the channel's error when it broke. Waiting longer
        than ``timeout`` seconds cancels the stream and raises
        TimeoutError; so does a task cancelled while it waits."""

        while True:
            items = self._items
            if items:
                item = items.popleft()
                self._bytes -= len(item)
                if self._end is None:
                    self._taken += 1
                    # Credit goes back in half windows, so a steady stream
                    # costs one credit frame per half window.
                    if self._taken >= max(self.window // 2, 1):
                        grant, self._taken = self._taken, 0
                        self._credit += grant
                        self._channel._credit(self.id, grant)
                return item
            end = self._end
            if end is _DONE:
                return None
            if isinstance(end, BaseException):
                raise end
            self._waiter = waiter = self._channel._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except BaseException:
                self.close()
                raise
            finally:
                self._waiter = None

    def close(self) -> None:
        """Ends the stream: one still running is cancelled in the daemon (a
        cancel frame, for a daemon that takes them) and its items dropped.
        A no-op after the end."""

        channel = self._channel
        if channel._streams.get(self.id) is not self:
            return
        del channel._streams[self.id]
        self._items.clear()
        self._bytes = 0
        self._finish(ConnectionError(f"stream {self.id} was closed"))
        channel._cancel(self.id)

    def _deliver(self, msg: dict[str, Any]) -> None:
        """Takes a frame the daemon answered this stream with. An item
        beyond the credit granted, or a frame that is none of a stream's,
        is a protocol error: it raises ValueError, which breaks the channel."""

        if "item" in msg:
            item = msg["item"]
            if not isinstance(item, bytes):
                raise ValueError(f"the daemon sent stream {self.id} an item that is not bin: {type(item).__name__}")
            if self._credit == 0:
                raise ValueError(
                    f"the daemon sent stream {self.id} an item beyond the credit it was granted "
                    f"(a window of {self.window})"
                )
            self._credit -= 1
            self._items.append(item)
            self._bytes += len(item)
            self._wake()
            return
        if "end" in msg:
            if msg["end"] is not True:
                raise ValueError(f"the daemon ended stream {self.id} with end={msg['end']!r}")
            end: object = _DONE
        elif "error" in msg:
            error = msg["error"]
            if not isinstance(error, bytes):
                raise ValueError(f"the daemon sent stream {self.id} an error that is not bin: {type(error).__name__}")
            end = MuxAnswerError(error)
        elif "payload" in msg:
            # A daemon that answered with one response: the only item.
            payload = msg["payload"]
            if not isinstance(payload, bytes):
                raise ValueError(f"the daemon answered stream {self.id} with a payload that is not bin")
            self._items.append(payload)
            self._bytes += len(payload)
            end = _DONE
        else:
            raise ValueError(f"the daemon sent stream {self.id} a frame with none of item, end, error: {list(msg)}")
        del self._channel._streams[self.id]
        self._finish(end)

    def _finish(self, end: object) -> None:
        if self._end is None:
            self._end = end
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _payload_head(size: int) -> bytes:
    """The "payload" key and the header of a bin of size bytes, in its
    smallest form."""

    if size < 0x100:
        return _PAYLOAD_BIN8.pack(_PAYLOAD_KEY, 0xC4, size)
    if size < 0x10000:
        return _PAYLOAD_BIN16.pack(_PAYLOAD_KEY, 0xC5, size)
    return _PAYLOAD_BIN32.pack(_PAYLOAD_KEY, 0xC6, size)
