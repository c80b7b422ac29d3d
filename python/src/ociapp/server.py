"""The application server: one Application behind a Unix domain socket.

Each connection carries many requests at once. Frames are parsed as they
arrive (many per socket read), every request runs concurrently, and each
response is written as soon as it is ready, so responses leave in completion
order. Responses that become ready in the same event-loop turn go out in one
write. A malformed frame or envelope closes its connection and cancels that
connection's outstanding requests; a clean end of stream lets them finish
first.

It supports the protocol's deadline, cancel and stream capabilities: a
request's deadline is readable during its handler through
``request_deadline()``, a cancel envelope cancels the handler's task, and a
stream handler's items are sent as the client's credit allows.
"""

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Generic

import msgpack
from pydantic import BaseModel, ValidationError

from .application import Application, RequestT, ResponseT, execute_callable
from .errors import PayloadCodecError, ProtocolError, ServerLifecycleError
from .payloads import NOT_SERIALIZABLE, decode_payload, to_wire
from .protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_SOCKET_PATH,
    FrameDecoder,
    decode_client_envelope,
    decode_request,
    encode_error,
)

__all__ = ["CAPABILITIES", "OciAppServer", "request_deadline", "serve_application"]

# The protocol extensions this server supports (docs/protocol.md,
# Capabilities), sorted; `ociapp schema` names them, and ociapp-build
# records them in the artifact.
CAPABILITIES = ("cancel", "deadline", "stream")

logger = logging.getLogger("ociapp")

VALIDATION_MESSAGE = "application payload validation failed"
STREAM_REQUIRED_MESSAGE = "this application streams its responses: call it as a stream"
BACKLOG = 128
# A stream whose handler never waits lets the event loop turn (reading
# cancels and credits, writing what was sent) after this many items.
STREAM_TURN = 64

# Python 3.12 can start a task eagerly: a handler that never has to wait
# (most do not) runs to completion inside the read callback, without a trip
# through the event loop's queue.
_EAGER_TASKS = sys.version_info >= (3, 12)

# How early a failure may come and still count as past its request's
# deadline. A timer set for the deadline (asyncio.timeout_at) can fire a
# hair before the loop's clock reaches it: uvloop keeps time and timers in
# whole milliseconds, so the float deadline can exceed the clock at the
# timer's firing by a rounding error.
_DEADLINE_SLACK = 0.001

# The loop time at which the current request's time is up; set in the task
# that runs a request with a deadline, so the handler, and the tasks and
# threads it starts, see it.
_request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "ociapp_request_deadline", default=None
)


def request_deadline() -> float | None:
    """Returns when the current request's time is up, or None.

    The value is on the event loop's clock (``loop.time()``): the time the
    server read the request plus the request's ``deadline_ms``. It is None
    outside a request, and for a request without a deadline (the runtime
    sends one only to an artifact that declares the deadline capability).
    Nothing is cancelled at the deadline; bound work with it::

        async with asyncio.timeout_at(ociapp.request_deadline()):
            ...
    """

    return _request_deadline.get()


class _Dispatcher:
    """Turns request payloads into response envelopes for one application.

    It validates exactly as the validate_call wrapper around execute does,
    with the models' compiled validators, and reports request validation
    errors with the wrapper's locations: they start with 1, the position of
    the request argument in ``execute(self, request)``.
    """

    def __init__(self, app: Application[Any, Any]) -> None:
        request_model: type[BaseModel] = app.request_model
        response_model: type[BaseModel] = app.response_model
        self._validate_request = request_model.__pydantic_validator__.validate_python
        self._validate_response = response_model.__pydantic_validator__.validate_python
        self._execute = execute_callable(app)
        self._is_async = inspect.iscoroutinefunction(self._execute)
        # A stream handler: execute is an async generator of items, and
        # response_model is the items' model.
        self.streams = inspect.isasyncgenfunction(self._execute)
        # Only ever used on the event loop's thread.
        self._pack = msgpack.Packer(use_bin_type=True, default=to_wire).pack
        self._pack_envelope = msgpack.Packer(use_bin_type=True).pack

    async def respond(self, request_id: str, payload: bytes, deadline: float | None = None) -> bytes | None:
        """Runs one request and returns its response envelope body; None for
        a handler that failed past the request's deadline (the loop's time
        it came with): the client has given up, and reports its own timeout,
        which the handler's error must not beat to it. A stream handler
        answers StreamRequired: the request did not ask for a stream."""

        if self.streams:
            return self._error(request_id, "StreamRequired", STREAM_REQUIRED_MESSAGE, None)
        request, error = self.request(request_id, payload)
        if error is not None:
            return error
        try:
            if self._is_async:
                result = await self._execute(request)
            else:
                result = await asyncio.to_thread(self._execute, request)
                if inspect.isawaitable(result):
                    result = await result
            body = self._dump(result)
        except Exception as exc:
            return self.failure(request_id, exc, deadline)
        return self._pack_envelope({"request_id": request_id, "payload": body, "error": None})

    def request(self, request_id: str, payload: bytes) -> tuple[Any, bytes | None]:
        """Validates a request payload: (request, None), or (None, the error
        response envelope body) when it is not a valid request."""

        try:
            return self._validate_request(decode_payload(payload)), None
        except PayloadCodecError as exc:
            return None, self._error(request_id, "PayloadCodecError", str(exc), None)
        except ValidationError as exc:
            return None, self._validation_error(request_id, exc, (1,))

    def items(self, request: Any) -> AsyncGenerator[Any, None]:
        """Starts a stream handler on a validated request."""

        return self._execute(request)  # type: ignore[no-any-return]

    def item(self, request_id: str, value: Any) -> bytes:
        """Returns the item envelope body of one value a stream handler
        yielded; raises ValidationError or PayloadCodecError as a response
        that is not valid does."""

        return self._pack_envelope({"request_id": request_id, "item": self._dump(value)})

    def end(self, request_id: str) -> bytes:
        """Returns the end envelope body of a stream that succeeded."""

        return self._pack_envelope({"request_id": request_id, "end": True})

    def failure(self, request_id: str, exc: Exception, deadline: float | None) -> bytes | None:
        """Returns the error response envelope body of a handler that raised
        exc; None past the request's deadline (see respond), or within a
        millisecond of it (_DEADLINE_SLACK)."""

        if deadline is not None and asyncio.get_running_loop().time() >= deadline - _DEADLINE_SLACK:
            return None
        if isinstance(exc, ValidationError):
            return self._validation_error(request_id, exc, ())
        if isinstance(exc, PayloadCodecError):
            return self._error(request_id, "PayloadCodecError", str(exc), None)
        return self._error(request_id, type(exc).__name__, _message(exc), None)

    def _dump(self, result: Any) -> bytes:
        """Validates a response (or item) and returns its msgpack map."""

        response = self._validate_response(result)
        # What model_dump() does, minus its keyword handling.
        dumped = response.__pydantic_serializer__.to_python(response)
        try:
            return self._pack(dumped)  # type: ignore[no-any-return]
        except Exception as exc:
            raise PayloadCodecError(NOT_SERIALIZABLE) from exc

    def cancelled(self, request_id: str, message: str) -> bytes:
        """The response for a request whose handler was cancelled, yet whose
        connection is still open to hear about it."""

        return self._error(request_id, "CancelledError", message, None)

    def _validation_error(
        self, request_id: str, exc: ValidationError, prefix: tuple[int, ...]
    ) -> bytes:
        errors = exc.errors()
        if prefix:
            for error in errors:
                error["loc"] = prefix + tuple(error["loc"])
        return self._error(request_id, "ValidationError", VALIDATION_MESSAGE, {"errors": errors})

    def _error(self, request_id: str, error_type: str, message: str, details: object) -> bytes:
        return self._pack_envelope(
            {
                "request_id": request_id,
                "payload": None,
                "error": encode_error(error_type, message, details),
            }
        )


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text or type(exc).__name__


class _Stream:
    """The flow control of one stream request: the items it may still send."""

    __slots__ = ("cancelled", "credit", "task", "waiter")

    def __init__(self, credit: int) -> None:
        self.credit = credit
        self.task: asyncio.Task[None] | None = None  # while it has not finished
        self.waiter: asyncio.Future[None] | None = None  # set while out of credit
        self.cancelled = False  # the client gave up on it

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _close_items(items: AsyncGenerator[Any, None], request_id: str) -> None:
    """Closes a stream handler's generator (it sees GeneratorExit where it
    waits at a yield); a failure of its cleanup can no longer be answered."""

    try:
        await items.aclose()
    except Exception:
        logger.exception("stream handler of request %s failed while closing", request_id)


class _Connection(asyncio.Protocol):
    """One client connection: frames in, concurrent requests, responses out."""

    def __init__(self, server: "OciAppServer[Any, Any]") -> None:
        self._server = server
        self._dispatcher = server._dispatcher
        self._decoder = FrameDecoder(server._max_frame_size)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The tasks a cancel envelope can name, by request id; only requests
        # that did not finish when they started are entered.
        self._running: dict[str, asyncio.Task[None]] = {}
        # Tasks cancelled already, each only once so that a handler's
        # cleanup is not cut short; True for those the client gave up on,
        # whose answers nobody reads.
        self._cancelled: dict[asyncio.Task[None], bool] = {}
        # The streams in progress, by request id: what credit names.
        self._streams: dict[str, _Stream] = {}
        # Clear while the transport's write buffer is full: streams wait.
        self._writable = asyncio.Event()
        self._writable.set()
        self._draining = False
        self._out: list[bytes] = []
        self._in_read = False  # inside data_received: flush once at its end
        self._flush_scheduled = False
        self._eof = False
        self._closing = False
        self._cancel_message = "CancelledError"
        self.lost: asyncio.Future[None] = self._loop.create_future()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server._connections.add(self)
        if self._server._draining:
            self._finish()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._eof:
            return
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        self._in_read = True
        try:
            for body in frames:
                try:
                    request_id, payload, deadline_ms, initial_credit, credit = (
                        decode_client_envelope(body)
                    )
                except ProtocolError as exc:
                    self._fail(exc)
                    return
                if payload is None:
                    if credit is None:
                        self._cancel_request(request_id)
                    else:
                        self._grant(request_id, credit)
                    continue
                # A stream request to a handler that does not stream is
                # answered with its one response.
                stream = None
                if initial_credit is not None and self._dispatcher.streams:
                    # Entered now, so that a credit read next finds it.
                    stream = self._streams[request_id] = _Stream(initial_credit)
                if deadline_ms is None:
                    task = self._start(request_id, self._run(request_id, payload, None, stream))
                else:
                    deadline = self._loop.time() + deadline_ms / 1000
                    task = self._start(
                        request_id, self._run_until(deadline, request_id, payload, stream)
                    )
                if stream is not None:
                    stream.task = task
        finally:
            self._in_read = False
        if self._out:
            self._flush()

    def eof_received(self) -> bool:
        try:
            self._decoder.finish()
        except ProtocolError as exc:
            self._fail(exc)
            return False
        self._eof = True
        if not self._tasks:
            self._finish()
        # Streams out of credit will get none now.
        for stream in self._streams.values():
            stream.wake()
        # Keep the write side open until outstanding responses are written.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._out.clear()
        self.cancel()
        self._server._connections.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        # The peer is not reading its responses: stop taking new requests
        # until it catches up.
        self._writable.clear()
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        if self._transport is not None and not self._closing and not self._server._draining:
            self._transport.resume_reading()

    # Requests

    def _start(
        self, request_id: str, coroutine: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None] | None:
        """Starts a request's task; returns it, or None when it finished at
        once."""

        if _EAGER_TASKS:
            task = asyncio.Task(coroutine, loop=self._loop, eager_start=True)  # type: ignore[call-arg]
        else:
            task = self._loop.create_task(coroutine)
        if task.done():
            return None
        task.set_name(request_id)
        self._tasks.add(task)
        self._running[request_id] = task
        task.add_done_callback(self._task_done)
        return task

    async def _run_until(
        self, deadline: float, request_id: str, payload: bytes, stream: _Stream | None
    ) -> None:
        # The task runs in its own copy of the context: this is its alone.
        _request_deadline.set(deadline)
        await self._run(request_id, payload, deadline, stream)

    async def _run(
        self,
        request_id: str,
        payload: bytes,
        deadline: float | None = None,
        stream: _Stream | None = None,
    ) -> None:
        try:
            if stream is None:
                body = await self._dispatcher.respond(request_id, payload, deadline)
            else:
                body = await self._stream(request_id, payload, deadline, stream)
            if body is None:
                return  # failed past its deadline: the client has given up
        except asyncio.CancelledError:
            if self._closing:
                raise
            if self._cancelled.get(asyncio.current_task()):  # type: ignore[arg-type]
                return  # the client gave up on it: no one reads an answer
            # The application cancelled itself, or the server was told to
            # stop waiting for it: the caller still gets an answer.
            body = self._dispatcher.cancelled(request_id, self._cancel_message)
        except Exception:
            logger.exception("internal error while serving request %s", request_id)
            self._fail(None)
            return
        self._send(body)

    async def _stream(
        self, request_id: str, payload: bytes, deadline: float | None, stream: _Stream
    ) -> bytes | None:
        """Runs a stream handler: sends an item envelope for each item as
        the stream's credit allows, and returns the envelope body that ends
        the stream (end, or the error response), or None for a failure past
        the deadline. The generator is advanced only while the stream has
        credit: at most one item it made waits for credit."""

        dispatcher = self._dispatcher
        request, error = dispatcher.request(request_id, payload)
        if error is not None:
            self._forget(request_id, stream)
            return error
        items = dispatcher.items(request)
        sent = 0
        try:
            while True:
                # The next item is made before there is credit for it (the
                # end of the stream needs none), and waits for its credit.
                try:
                    value = await anext(items)
                except StopAsyncIteration:
                    break
                if stream.cancelled:
                    # The handler went on after its cancellation: nothing
                    # more is sent for it.
                    raise asyncio.CancelledError
                body = dispatcher.item(request_id, value)
                while not stream.credit:
                    if self._eof:
                        return dispatcher.cancelled(
                            request_id,
                            "the client ended its side of the connection "
                            "while the stream waited for credit",
                        )
                    if self._draining:
                        return dispatcher.cancelled(
                            request_id, "the server stopped before the stream finished"
                        )
                    stream.waiter = self._loop.create_future()
                    try:
                        await stream.waiter
                    finally:
                        stream.waiter = None
                self._send(body)
                stream.credit -= 1
                sent += 1
                if not self._writable.is_set():
                    await self._writable.wait()
                elif not sent % STREAM_TURN:
                    await asyncio.sleep(0)
        except Exception as exc:
            return dispatcher.failure(request_id, exc, deadline)
        finally:
            self._forget(request_id, stream)
            await _close_items(items, request_id)
        return dispatcher.end(request_id)

    def _forget(self, request_id: str, stream: _Stream) -> None:
        if self._streams.get(request_id) is stream:
            del self._streams[request_id]

    def _grant(self, request_id: str, credit: int) -> None:
        """Adds credit to a stream; a credit for a request that is not
        streaming (finished, not a stream, or never sent) is ignored."""

        stream = self._streams.get(request_id)
        if stream is not None:
            stream.credit += credit
            stream.wake()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        request_id = task.get_name()
        if self._running.get(request_id) is task:
            del self._running[request_id]
        if self._cancelled:
            self._cancelled.pop(task, None)
        # A stream cancelled before its task took its first step never ran
        # the code that forgets it.
        if self._streams:
            stream = self._streams.get(request_id)
            if stream is not None and stream.task is task:
                del self._streams[request_id]
        if self._eof and not self._tasks:
            self._finish()

    def _cancel_request(self, request_id: str) -> None:
        """Cancels the handler of a request the client gave up on; a request
        that is not running (finished, or never sent) is ignored."""

        task = self._running.pop(request_id, None)
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.cancelled = True
        if task is not None and task not in self._cancelled:
            self._cancelled[task] = True
            task.cancel()

    # Output

    def _send(self, body: bytes) -> None:
        if self._closing:
            return
        self._out.append(len(body).to_bytes(4, "big") + body)
        if not self._in_read and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out and not self._closing and self._transport is not None:
            self._out = []
            if len(out) == 1:
                self._transport.write(out[0])
            else:
                self._transport.writelines(out)

    # Shutdown

    def _finish(self) -> None:
        """Writes what is pending and closes the connection gracefully."""

        if self._closing or self._transport is None:
            return
        self._flush()
        self._closing = True
        self._transport.close()

    def _fail(self, exc: BaseException | None) -> None:
        """Drops the connection after a protocol error, cancelling its requests."""

        if exc is not None and not self._closing:
            logger.debug("closing connection: %s", exc)
        self._closing = True
        self._out.clear()
        self.cancel()
        if self._transport is not None:
            self._transport.abort()

    def cancel(self, message: str | None = None) -> None:
        """Cancels the outstanding requests.

        While the connection is open, each gets a CancelledError response
        carrying message. A request is cancelled once: a later call (the
        connection is lost after a protocol error closed it, say) leaves its
        handler's cleanup alone.
        """

        if message is not None:
            self._cancel_message = message
        for task in self._tasks:
            if task not in self._cancelled:
                self._cancelled[task] = False
                task.cancel()

    def drain(self) -> None:
        """Stops reading new requests; outstanding ones still complete."""

        self._draining = True
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()
        # No credit can come now: streams out of it end.
        for stream in self._streams.values():
            stream.wake()

    def outstanding(self) -> Iterable["asyncio.Task[None]"]:
        return tuple(self._tasks)


class OciAppServer(Generic[RequestT, ResponseT]):
    """Serves an OCIApp application over a Unix domain socket.

    The socket appears at its path only once it accepts connections, with
    mode 0666: it is bound under a temporary name and renamed into place, so
    a client that sees the path can connect. A stale file at the path is
    removed first.
    """

    def __init__(
        self,
        app: Application[RequestT, ResponseT],
        socket_path: Path | str = DEFAULT_SOCKET_PATH,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        FrameDecoder(max_frame_size)  # validates the limit
        self._app = app
        self._socket_path = Path(socket_path)
        self._max_frame_size = max_frame_size
        self._dispatcher = _Dispatcher(app)
        self._server: asyncio.AbstractServer | None = None
        self._socket_inode: int | None = None
        self._connections: set[_Connection] = set()
        self._draining = False

    @property
    def socket_path(self) -> Path:
        """Returns the path the server listens on."""

        return self._socket_path

    async def __aenter__(self) -> "OciAppServer[RequestT, ResponseT]":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Starts listening; returns once the socket is in place."""

        if self._server is not None:
            raise ServerLifecycleError("server is already started")
        self._draining = False
        loop = asyncio.get_running_loop()
        path = self._socket_path
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        sock = _bind(path, staging)
        try:
            self._server = await loop.create_unix_server(
                lambda: _Connection(self), sock=sock, backlog=BACKLOG
            )
            os.rename(staging, path)
            self._socket_inode = os.stat(path).st_ino
        except BaseException:
            if self._server is not None:
                self._server.close()
                self._server = None
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise

    async def serve_forever(self) -> None:
        """Starts the server if needed and serves until cancelled."""

        if self._server is None:
            await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.close()

    async def shutdown(self) -> None:
        """Drains: stops accepting and reading, finishes outstanding requests,
        writes their responses, then closes everything."""

        self._draining = True
        self._stop_listening()
        for connection in tuple(self._connections):
            connection.drain()
        while True:
            tasks = [task for c in self._connections for task in c.outstanding()]
            if not tasks:
                break
            await asyncio.wait(tasks)
        await self.close()

    async def close(self) -> None:
        """Stops the server at once: outstanding requests are cancelled,
        connections closed and the socket file removed."""

        self._draining = True
        self._stop_listening()
        connections = tuple(self._connections)
        for connection in connections:
            connection._finish()
            connection.cancel()
        if connections:
            # Give closing transports a moment to write what they hold.
            await asyncio.wait([c.lost for c in connections], timeout=1.0)
            for connection in connections:
                if not connection.lost.done():
                    connection._fail(None)
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
        self._remove_socket()

    def _remove_socket(self) -> None:
        # Only remove the socket if it is still ours: a successor may have
        # replaced it already.
        if self._socket_inode is None:
            return
        inode, self._socket_inode = self._socket_inode, None
        with contextlib.suppress(OSError):
            if os.stat(self._socket_path).st_ino == inode:
                os.unlink(self._socket_path)

    def cancel_outstanding(self) -> None:
        """Cancels every outstanding request; a running shutdown then completes."""

        for connection in tuple(self._connections):
            connection.cancel("the server stopped before the request finished")

    async def _handle_request(self, frame_payload: bytes) -> bytes:
        """Serves one request envelope body and returns the response body."""

        request_id, payload = decode_request(frame_payload)
        body = await self._dispatcher.respond(request_id, payload)
        assert body is not None  # None only for a request with a deadline
        return body


def _bind(path: Path, staging: Path) -> socket.socket:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        _remove_stale(staging)
    except OSError as exc:
        raise ServerLifecycleError(f"cannot prepare socket path {path}: {exc}") from exc
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staging))
        os.chmod(staging, 0o666)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise ServerLifecycleError(f"cannot listen on {path}: {exc}") from exc
    return sock


def _remove_stale(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path} is a directory")
    os.unlink(path)


async def serve_application(
    app: Application[Any, Any],
    socket_path: Path | str = DEFAULT_SOCKET_PATH,
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    stop_signals: Iterable[signal.Signals] = (),
    on_ready: Callable[[OciAppServer[Any, Any]], Awaitable[None] | None] | None = None,
) -> None:
    """Serves an application until cancelled or until a stop signal arrives.

    A first stop signal drains the server (outstanding requests finish and
    get their responses) and returns normally; a second one cancels what is
    still running.
    """

    server: OciAppServer[Any, Any] = OciAppServer(
        app, socket_path, max_frame_size=max_frame_size
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = tuple(stop_signals)
    installed = []

    def on_signal(signum: signal.Signals) -> None:
        if not stop.is_set():
            logger.info("%s received, draining outstanding requests", signum.name)
            stop.set()
        else:
            logger.info("%s received again, cancelling outstanding requests", signum.name)
            server.cancel_outstanding()

    try:
        # Handlers first: a stop signal during start-up still drains cleanly.
        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        await server.start()
        if on_ready is not None:
            ready = on_ready(server)
            if inspect.isawaitable(ready):
                await ready
        await stop.wait()
        await server.shutdown()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        await server.close()
