"""Shared helpers: live servers on real Unix sockets, a raw protocol client,
and the conformance vectors of the protocol package."""

import asyncio
import contextlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from ociapp import Application, OciAppServer
from ociapp.protocol import (
    FrameDecoder,
    decode_error,
    decode_server_envelope,
    encode_credit,
    encode_request,
    pack_frame,
)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[1]
TIMEOUT = 5.0
# The conformance vectors the Go protocol package generates.
VECTORS = Path(os.environ.get("OCIAPP_VECTORS", REPO / "protocol" / "testdata" / "vectors.json"))

# Subprocesses import the sample applications from here.
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def _loop_policies() -> dict[str, asyncio.AbstractEventLoopPolicy]:
    policies = {"asyncio": asyncio.DefaultEventLoopPolicy()}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        policies["uvloop"] = uvloop.EventLoopPolicy()
    return policies


LOOP_POLICIES = _loop_policies()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every async test runs on asyncio's loop, and on uvloop's when installed.
    if inspect.iscoroutinefunction(metafunc.function):
        metafunc.parametrize("event_loop_policy", sorted(LOOP_POLICIES), indirect=True)


@pytest.fixture
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    return LOOP_POLICIES[getattr(request, "param", "asyncio")]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: a socket path must fit in 108 bytes."""

    path = Path(tempfile.mkdtemp(prefix="oa-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    """The conformance vectors the Go protocol package generates."""

    if not VECTORS.is_file():
        pytest.fail(f"conformance vectors not found at {VECTORS}; set OCIAPP_VECTORS")
    return json.loads(VECTORS.read_text())


@contextlib.asynccontextmanager
async def serving(
    app: Application[Any, Any], directory: Path, **options: Any
) -> AsyncIterator[OciAppServer[Any, Any]]:
    """Runs an OciAppServer for app in this event loop."""

    server: OciAppServer[Any, Any] = OciAppServer(app, directory / "app.sock", **options)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class Response:
    """A response envelope, or a stream's item or end envelope."""

    def __init__(
        self,
        request_id: str,
        payload: bytes | None,
        error: bytes | None,
        item: bytes | None = None,
        end: bool = False,
    ) -> None:
        self.request_id = request_id
        self.payload = None if payload is None else msgpack.unpackb(payload, raw=False)
        self.error = None if error is None else decode_error(error)
        self.item = None if item is None else msgpack.unpackb(item, raw=False)
        self.end = end

    def __repr__(self) -> str:
        if self.item is not None:
            return f"Item({self.request_id}, {self.item!r})"
        if self.end:
            return f"End({self.request_id})"
        return f"Response({self.request_id}, {self.payload!r}, {self.error!r})"


class RawClient:
    """A deliberately simple client that can also send broken bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder()
        self._frames: list[bytes] = []

    @classmethod
    async def connect(cls, path: Path) -> "RawClient":
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    def send(
        self,
        payload: Any,
        request_id: str | None = None,
        *,
        raw: bool = False,
        deadline_ms: int | None = None,
        stream: int | None = None,
    ) -> str:
        request_id = request_id or str(uuid.uuid4())
        body = payload if raw else msgpack.packb(payload, use_bin_type=True)
        self.writer.write(pack_frame(encode_request(request_id, body, deadline_ms, stream)))
        return request_id

    def credit(self, request_id: str, credit: int) -> None:
        self.writer.write(pack_frame(encode_credit(request_id, credit)))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def receive(self, timeout: float = TIMEOUT) -> Response:
        body = await asyncio.wait_for(self._next_frame(), timeout)
        if body is None:
            raise ConnectionError("server closed the connection")
        return Response(*decode_server_envelope(body))

    async def _next_frame(self) -> bytes | None:
        while not self._frames:
            data = await self.reader.read(65536)
            if not data:
                self._decoder.finish()
                return None
            self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0)

    async def call(self, payload: Any, timeout: float = TIMEOUT) -> Response:
        request_id = self.send(payload)
        response = await self.receive(timeout)
        assert response.request_id == request_id
        return response

    async def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """True when the server closes the connection without another response."""

        try:
            body = await asyncio.wait_for(self._next_frame(), timeout)
        except (ConnectionError, OSError):
            return True
        return body is None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
