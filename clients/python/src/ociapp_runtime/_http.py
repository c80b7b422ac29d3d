"""A small asyncio HTTP/1.1 client for the runtime daemon.

It speaks just what the daemon needs: Content-Length request bodies (from
memory or streamed from a file, optionally behind ``Expect: 100-continue``),
Content-Length or chunked responses, and keep-alive connections over a Unix
socket or TCP (with TLS). The standard library has no asyncio HTTP client,
and the runtime must not depend on more than msgpack.
"""

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Address", "Client", "Response", "parse_url"]

_MAX_HEADER_BYTES = 64 << 10
_MAX_IDLE = 16
# Idle connections older than this are not reused: the daemon closes idle
# connections after two minutes, and a request sent as it does would fail.
_MAX_IDLE_AGE = 60.0
_CHUNK = 1 << 20
_CONTINUE_WAIT = 2.0


@dataclass(frozen=True, slots=True)
class Address:
    """Where the daemon listens: a Unix socket path, or a TCP host and port."""

    unix_path: str | None = None
    host: str | None = None
    port: int | None = None
    tls: bool = False

    @property
    def host_header(self) -> str:
        if self.unix_path is not None:
            return "ociapp-runtime"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"{'https' if self.tls else 'http'}://{self.host_header}"


def parse_url(url: str) -> Address:
    """Parses unix:///PATH, tcp://HOST:PORT, http://HOST:PORT or https://HOST:PORT."""

    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError(f"daemon URL {url!r}: expected unix:///ABSOLUTE/PATH")
        return Address(unix_path=path)
    parts = urlsplit(url)
    if parts.scheme not in {"tcp", "http", "https"} or not parts.hostname:
        raise ValueError(
            f"daemon URL {url!r}: use unix:///PATH, tcp://HOST:PORT, "
            "http://HOST:PORT or https://HOST:PORT"
        )
    if parts.path not in {"", "/"}:
        raise ValueError(f"daemon URL {url!r}: expected no path")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    return Address(host=parts.hostname, port=port, tls=tls)


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        self.writer.close()


class _StaleConnection(Exception):
    """A reused connection ended before any byte of the response: the
    server had closed it, so the request was not processed."""


class Client:
    """Sends requests to one daemon, keeping idle connections for reuse."""

    def __init__(self, address: Address, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.address = address
        self._ssl = ssl_context
        if address.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self._idle: list[_Conn] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        body_file: Path | None = None,
        expect_continue: bool = False,
    ) -> Response:
        """Sends one request and reads the whole response.

        A connection taken from the idle pool that turns out to be closed is
        replaced once; other connection failures raise ``OSError`` or
        ``asyncio.IncompleteReadError``.
        """

        while True:
            conn, reused = await self._get()
            try:
                resp, keep = await self._exchange(
                    conn, method, path, headers or {}, body, body_file, expect_continue, reused
                )
            except _StaleConnection:
                conn.close()
                continue
            except BaseException:
                conn.close()
                raise
            if keep:
                self._put(conn)
            else:
                conn.close()
            return resp

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    async def _get(self) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < _MAX_IDLE_AGE and not conn.reader.at_eof():
                return conn, True
            conn.close()
        if self.address.unix_path is not None:
            reader, writer = await asyncio.open_unix_connection(self.address.unix_path)
        else:
            reader, writer = await asyncio.open_connection(
                self.address.host,
                self.address.port,
                ssl=self._ssl if self.address.tls else None,
                limit=_MAX_HEADER_BYTES,
            )
        return _Conn(reader, writer), False

    def _put(self, conn: _Conn) -> None:
        if len(self._idle) >= _MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        body_file: Path | None,
        expect_continue: bool,
        reused: bool,
    ) -> tuple[Response, bool]:
        length = 0
        if body_file is not None:
            length = body_file.stat().st_size
        elif body is not None:
            length = len(body)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.address.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or body_file is not None:
            lines.append(f"Content-Length: {length}")
        if expect_continue:
            lines.append("Expect: 100-continue")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer = conn.writer

        if not expect_continue:
            writer.write(head)
            await self._send_body(writer, body, body_file, length)
            return await self._read_response(conn, method, reused)

        writer.write(head)
        await writer.drain()
        try:
            first = await asyncio.wait_for(
                self._read_response(conn, method, reused), _CONTINUE_WAIT
            )
        except TimeoutError:
            first = None  # no interim answer: send the body anyway (RFC 9110)
        if first is not None and first[0].status != 100:
            # Refused before the body was sent: the connection cannot carry
            # another request, since the server may still expect a body.
            return first[0], False
        await self._send_body(writer, body, body_file, length)
        return await self._read_response(conn, method, False)

    @staticmethod
    async def _send_body(
        writer: asyncio.StreamWriter, body: bytes | None, body_file: Path | None, length: int
    ) -> None:
        if body:
            writer.write(body)
        if body_file is not None:
            await _send_file(writer, body_file, length)
        await writer.drain()

    async def _read_response(
        self, conn: _Conn, method: str, reused: bool
    ) -> tuple[Response, bool]:
        reader = conn.reader
        try:
            status_line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                raise _StaleConnection() from exc
            raise
        except ConnectionResetError as exc:
            if reused:
                raise _StaleConnection() from exc
            raise
        version, status, reason = _parse_status(status_line)
        headers: dict[str, str] = {}
        size = len(status_line)
        while True:
            line = await reader.readuntil(b"\r\n")
            size += len(line)
            if size > _MAX_HEADER_BYTES:
                raise OSError("the daemon's response headers are too large")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        resp = Response(status, reason, headers)
        if 100 <= status < 200:
            return resp, True
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304):
            return resp, keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            resp.body = await _read_chunked(reader)
        elif "content-length" in headers:
            resp.body = await reader.readexactly(int(headers["content-length"]))
        else:
            resp.body = await reader.read()
            keep = False
        return resp, keep


def _parse_status(line: bytes) -> tuple[str, int, str]:
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise OSError(f"not an HTTP response: {line[:80]!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, up to the blank line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


async def _send_file(writer: asyncio.StreamWriter, path: Path, length: int) -> None:
    """Sends exactly the length announced; a file that shrank meanwhile
    would leave the server waiting for the rest."""

    left = length
    with path.open("rb") as f:
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(_CHUNK, left))
            if not chunk:
                raise OSError(f"{path} changed while it was being uploaded")
            writer.write(chunk)
            await writer.drain()
            left -= len(chunk)
