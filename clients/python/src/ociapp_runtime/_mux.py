"""The daemon's execute channel (docs/daemon.md, "Execute channel").

One connection, switched by an HTTP Upgrade to frames of a 4-byte
big-endian length and a msgpack map: requests are written as they come and
answered, by id, as they complete, so many run at once on one connection
and none costs an HTTP exchange.
"""

import asyncio
import contextlib
import json
import ssl
from typing import Any

import msgpack

from ._http import Address

__all__ = ["MuxChannel", "MuxRefused", "MuxUnsupported"]

_PROTOCOL = "ociapp-mux/1"
_MAX_HEADER_BYTES = 64 << 10
# The largest response frame: a container's largest payload and room for
# the envelope.
_MAX_FRAME = (16 << 20) + (8 << 10)
# Written frames beyond this wait for the socket to take them.
_DRAIN_ABOVE = 1 << 20


class MuxUnsupported(Exception):
    """The daemon (or something between) has no execute channel."""


class MuxRefused(Exception):
    """The daemon refused the upgrade: ``status`` and the error ``body``."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class MuxChannel:
    """An open execute channel. ``call`` may be awaited by many tasks at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._error: BaseException | None = None
        self._packer = msgpack.Packer(use_bin_type=True)
        self._task = asyncio.get_running_loop().create_task(self._read(), name="ociapp-runtime-mux")

    @classmethod
    async def open(cls, address: Address, token: str | None, ssl_context: ssl.SSLContext | None) -> "MuxChannel":
        if address.unix_path is not None:
            reader, writer = await asyncio.open_unix_connection(address.unix_path, limit=_MAX_HEADER_BYTES)
        else:
            reader, writer = await asyncio.open_connection(
                address.host, address.port, ssl=ssl_context, limit=_MAX_HEADER_BYTES
            )
        try:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            writer.write(
                f"GET /v1/mux HTTP/1.1\r\nHost: {address.host_header}\r\nConnection: Upgrade\r\n"
                f"Upgrade: {_PROTOCOL}\r\n{auth}\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            if status != 101:
                headers = dict(
                    (k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
                )
                body: Any = b""
                length = int(headers.get("content-length", "0") or 0)
                if 0 < length <= _MAX_HEADER_BYTES:
                    body = await reader.readexactly(length)
                if status in (404, 405) or status < 300:
                    raise MuxUnsupported(f"HTTP {status}")
                with contextlib.suppress(ValueError):
                    body = json.loads(body)
                raise MuxRefused(status, body)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    @property
    def broken(self) -> BaseException | None:
        return self._error

    async def call(self, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Sends one request (``fields`` name its artifact) and returns the
        response map: ``payload`` or ``error`` (an error body, msgpack)."""

        if self._error is not None:
            raise self._error
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        body = self._packer.pack({"id": rid, **fields, "payload": payload})
        try:
            self._writer.write(len(body).to_bytes(4, "big") + body)
            if self._writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                await self._writer.drain()
            return await fut
        finally:
            # Answered, failed or given up: a late answer is dropped.
            self._pending.pop(rid, None)

    async def _read(self) -> None:
        reader = self._reader
        try:
            while True:
                head = await reader.readexactly(4)
                size = int.from_bytes(head, "big")
                if size == 0 or size > _MAX_FRAME:
                    raise ConnectionError(f"the daemon sent a frame of {size} bytes")
                msg = msgpack.unpackb(await reader.readexactly(size), raw=False, strict_map_key=False)
                fut = self._pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except asyncio.CancelledError:
            self._fail(ConnectionError("the execute channel was closed"))
            raise
        except asyncio.IncompleteReadError:
            self._fail(ConnectionError("the daemon closed the execute channel"))
        except (OSError, ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            self._fail(exc)
        finally:
            self._writer.close()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
