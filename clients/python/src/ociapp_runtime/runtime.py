"""The host runtime: ``async with Runtime() as runtime: await runtime.execute(path, payload)``.

A ``Runtime`` executes requests through an ``ociapp-runtime serve`` daemon.
Without a URL it starts one of its own on a Unix socket in a private
directory and stops it (and with it every container) on exit; with a URL
(or ``OCIAPP_RUNTIME_URL``) it uses a daemon that runs elsewhere, on this
host or another. Artifacts are uploaded to the daemon once per content
digest; requests and responses travel as msgpack.
"""

import asyncio
import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import ssl
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import msgpack

from ._http import Address, Client, Response, parse_url
from ._mux import (
    DEFAULT_STREAM_WINDOW,
    MuxAnswerError,
    MuxChannel,
    MuxRefused,
    MuxStream,
    MuxUnsupported,
    deadline_millis,
    encode_fields,
)
from .engine import DockerAdapter, EngineAdapter
from .errors import (
    STATUS_BY_CODE,
    ArtifactLoadError,
    DaemonUnavailableError,
    EngineUnavailableError,
    InstanceShutdownError,
    OCIAppRuntimeError,
    RequestTimeoutError,
    ResponseProtocolError,
    error_from_body,
)

__all__ = ["Runtime"]

T = TypeVar("T")

ENV_URL = "OCIAPP_RUNTIME_URL"
ENV_TOKEN = "OCIAPP_RUNTIME_TOKEN"
ENV_BINARY = "OCIAPP_RUNTIME_BINARY"

_MSGPACK = "application/msgpack"
# ociapp-runtime serve's exit status when the container engine is unreachable.
_EXIT_ENGINE_UNAVAILABLE = 5
# How long a starting daemon may take to answer its health check.
_DAEMON_START_TIMEOUT = 30.0
# Request bodies above this size are sent behind "Expect: 100-continue".
_EXPECT_CONTINUE_ABOVE = 64 << 10
# How long a path's resolution and stat are trusted (the runtime's own
# recheck interval).
_RECHECK_AFTER = 0.1
# Beyond its own timeouts, how long an execute may wait for the daemon
# (loading a large image, queueing) before the daemon counts as hung.
_EXECUTE_GRACE = 120.0
# The header carrying an HTTP execute's time left (docs/daemon.md, "Deadlines").
_DEADLINE_HEADER = "Ociapp-Deadline-Ms"


def user_state_dir() -> Path:
    """The per-user state directory of the daemons Runtimes start by default:
    ``$XDG_STATE_HOME/ociapp-runtime/python``, else
    ``~/.local/state/ociapp-runtime/python``."""

    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "ociapp-runtime" / "python"


class Runtime:
    """Executes OCIApp artifacts in warm, sandboxed containers.

    The timeouts are in seconds and configure the daemon the runtime starts;
    a daemon given by ``url`` has its own. ``engine`` selects the container
    engine: ``DockerAdapter()`` (the default), ``KubernetesAdapter()``, or
    a Docker daemon's address as a string. ``runtime_root`` holds the
    started daemon's socket, log and state; artifacts uploaded to it, and
    what the daemon remembers of files it verified, stay there for the next
    run. By default the socket and log are in a temporary directory removed
    on exit, and the state in a per-user directory
    (``$XDG_STATE_HOME/ociapp-runtime/python``, else
    ``~/.local/state/ociapp-runtime/python``) that one Runtime at a time
    uses; a Runtime started while another holds it keeps its state in the
    temporary directory.

    The sandbox and pool settings, also for the started daemon (``None``:
    the daemon's default, see docs/runtime.md): ``network`` (``"none"``, or
    e.g. ``"bridge"``), ``memory`` (bytes, or text such as ``"512m"``;
    ``0`` for no limit), ``cpus``, ``max_containers`` and
    ``min_containers`` per artifact, ``container_concurrency`` (requests
    per container at once) and ``queue_size`` (requests waiting per
    artifact before ``OverloadedError``).

    A daemon on a Unix socket (the one a Runtime starts, or a ``unix://``
    URL) opens the caller's artifact by its path, verifying it as any
    artifact; other daemons, and any with ``uploads=True``, are sent it.
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        engine: EngineAdapter | str | None = None,
        runtime_root: Path | str | None = None,
        startup_timeout: float = 10.0,
        request_timeout: float = 30.0,
        shutdown_timeout: float = 10.0,
        idle_timeout: float = 900.0,
        reaper_interval: float = 1.0,
        network: str | None = None,
        memory: int | str | None = None,
        cpus: float | None = None,
        max_containers: int | None = None,
        min_containers: int | None = None,
        container_concurrency: int | None = None,
        queue_size: int | None = None,
        url: str | None = None,
        token: str | None = None,
        ca_file: Path | str | None = None,
        binary: str | None = None,
        uploads: bool = False,
    ) -> None:
        if isinstance(engine, str):
            engine = DockerAdapter(engine)
        if engine is not None and not isinstance(engine, EngineAdapter):
            raise TypeError(
                "engine must be DockerAdapter(), KubernetesAdapter() or a Docker "
                f"daemon's address, got {engine!r}: the engine runs inside the "
                "ociapp-runtime daemon, not in this process"
            )
        for name, value in (
            ("startup_timeout", startup_timeout),
            ("request_timeout", request_timeout),
            ("shutdown_timeout", shutdown_timeout),
            ("idle_timeout", idle_timeout),
            ("reaper_interval", reaper_interval),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self._sandbox_args = _sandbox_args(
            network=network,
            memory=memory,
            cpus=cpus,
            max_containers=max_containers,
            min_containers=min_containers,
            container_concurrency=container_concurrency,
            queue_size=queue_size,
        )
        self._engine = engine
        self._runtime_root = Path(runtime_root).resolve() if runtime_root is not None else None
        self._startup_timeout = float(startup_timeout)
        self._request_timeout = float(request_timeout)
        self._shutdown_timeout = float(shutdown_timeout)
        self._idle_timeout = float(idle_timeout)
        self._reaper_interval = float(reaper_interval)
        # How long a request on the execute channel may take.
        self._execute_timeout = self._startup_timeout + self._request_timeout + _EXECUTE_GRACE
        self._given_url = url if url is not None else os.environ.get(ENV_URL) or None
        if self._given_url is not None and self._sandbox_args:
            raise ValueError(
                "the sandbox and pool settings configure the daemon a Runtime starts; "
                f"the daemon at {self._given_url} has its own (set them on its ociapp-runtime serve)"
            )
        self._token = token if token is not None else os.environ.get(ENV_TOKEN) or None
        self._ca_file = ca_file
        self._binary = binary or os.environ.get(ENV_BINARY) or "ociapp-runtime"

        # Whether the daemon is asked to open artifacts by path (it is on
        # this host: a Unix socket), rather than be sent them.
        self._local = False
        self._uploads = uploads
        # The execute channel: open, being opened, or absent from the daemon.
        self._mux: MuxChannel | None = None
        self._mux_lock = asyncio.Lock()
        self._mux_off = False
        self._started = False
        self._client: Client | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._own_dir: Path | None = None  # a temporary directory to remove
        self._state_lock: int | None = None  # the locked per-user state directory's lock
        self._state_dir: Path | None = None
        self._log_path: Path | None = None
        self._digests: dict[tuple[str, int, int, int, int], str] = {}
        self._paths: dict[str, tuple[Path, os.stat_result, dict[str, str], tuple[int, bytes], float]] = {}
        # The execute channel's encoding of {"digest": digest}, per digest.
        self._digest_fields: dict[str, tuple[int, bytes]] = {}
        self._packer = msgpack.Packer(use_bin_type=True)
        self._uploaded: set[str] = set()
        self._uploading: dict[str, asyncio.Future[None]] = {}

    async def __aenter__(self) -> "Runtime":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: object | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str | None:
        """The address of the daemon in use, once started."""

        return str(self._client.address) if self._client is not None else None

    @property
    def state_dir(self) -> Path | None:
        """The state directory of the daemon this runtime started, once
        started; None for a daemon given by URL."""

        return self._state_dir

    async def start(self) -> None:
        """Starts the daemon, or checks that the given one answers."""

        if self._started:
            return
        if self._given_url is not None:
            address = parse_url(self._given_url)
            self._client = Client(address, ssl_context=self._ssl_context(address))
            try:
                await self._health()
            except BaseException:
                await self._client.close()
                self._client = None
                raise
        else:
            await self._spawn()
        assert self._client is not None
        self._local = self._client.address.unix_path is not None and not self._uploads
        self._started = True

    async def close(self) -> None:
        """Stops the daemon this runtime started, and with it every container."""

        if not self._started:
            return
        self._started = False
        if self._mux is not None:
            await self._mux.close()
            self._mux = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        try:
            if self._proc is not None:
                await self._stop_daemon()
        finally:
            self._proc = None
            self._release()

    async def execute(
        self, image_path: Path | str, request: dict[str, object], *, timeout: float | None = None
    ) -> dict[str, object]:
        """Executes one request against the application in an artifact and
        returns its response.

        ``timeout``, in seconds, bounds the whole call; its handler gets
        the time left as its deadline (for an artifact that declares the
        deadline capability: ``ctx.Deadline()`` in Go,
        ``ociapp.request_deadline()`` in Python). When it passes the
        request is cancelled and ``RequestTimeoutError`` raised. An
        enclosing ``asyncio.timeout()`` cancels the call too, but cannot be
        read from the task: pass ``timeout=`` for the handler to know it.
        """

        if not self._started or self._client is None:
            raise OCIAppRuntimeError("runtime must be started before executing requests")
        deadline = _deadline(timeout)
        if deadline is None:
            return await self._execute(image_path, request, None)
        return await _within(self._execute(image_path, request, deadline), deadline, timeout)

    async def _execute(
        self, image_path: Path | str, request: dict[str, object], deadline: float | None
    ) -> dict[str, object]:
        path, st, fields, encoded = self._resolve(image_path)
        try:
            payload = self._packer.pack(request)
        except (TypeError, ValueError, OverflowError) as exc:
            raise OCIAppRuntimeError(f"the request cannot be encoded as msgpack: {exc}") from exc
        if self._local:
            try:
                return await self._execute_on(fields, encoded, None, payload, path, deadline)
            except OCIAppRuntimeError as err:
                if err.code == "not_found":
                    # The daemon does not open files by path: upload them.
                    self._local = False
                elif err.code != "artifact_not_found":
                    raise
                # else the daemon sees another file at that path (it runs
                # in another mount namespace): upload this one.
        digest = await self._digest(path, st)
        encoded = self._encoded_digest(digest)
        retried = False
        while True:
            await self._ensure_uploaded(path, digest)
            try:
                return await self._execute_on(
                    {"digest": digest}, encoded, f"/v1/artifacts/{digest}/execute", payload, path, deadline
                )
            except OCIAppRuntimeError as err:
                if err.code == "artifact_not_found" and not retried:
                    # The daemon lost it (it restarted on a new state
                    # directory): send it again, once.
                    self._uploaded.discard(digest)
                    retried = True
                    continue
                raise

    def stream(
        self,
        image_path: Path | str,
        request: dict[str, object],
        *,
        window: int = DEFAULT_STREAM_WINDOW,
        timeout: float | None = None,
    ) -> AsyncIterator[dict[str, object]]:
        """Executes one request and yields its response's items as they
        arrive: ``async for item in runtime.stream(path, request)``.

        A handler that streams (the stream capability) gives its items; any
        other handler its one response as the only item, and so does every
        handler when the daemon does not offer streams on its execute
        channel (one execute is sent instead). Items come under credit: at
        most ``window`` of them are held here not yet taken, and the daemon
        is granted more, in half windows, as the loop takes them, so a loop
        that stops taking items stops the handler. Leaving the loop early
        (``break``, ``aclose()``, the task cancelled) cancels the handler.
        The exceptions are execute's, raised after the items that came
        before them. The daemon's request timeout bounds each wait for the
        next item, not the whole stream; each wait is also bounded, as
        every execute is, by ``startup_timeout + request_timeout + 120 s``
        (``RequestTimeoutError``). ``timeout``, in seconds from the start of
        the iteration, bounds the whole stream, as it bounds an
        ``execute``: the handler gets the time left as its deadline, and
        when it passes the stream is cancelled and raises
        ``RequestTimeoutError``.
        """

        if not self._started or self._client is None:
            raise OCIAppRuntimeError("runtime must be started before executing requests")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int of at least 1, got {window!r}")
        # Checked now; counted from the start of the iteration.
        return self._stream(image_path, request, window, _check_timeout(timeout))

    async def _stream(
        self, image_path: Path | str, request: dict[str, object], window: int, timeout: float | None
    ) -> AsyncIterator[dict[str, object]]:
        deadline = _deadline(timeout)
        path, st, fields, encoded = self._resolve(image_path)
        try:
            payload = self._packer.pack(request)
        except (TypeError, ValueError, OverflowError) as exc:
            raise OCIAppRuntimeError(f"the request cannot be encoded as msgpack: {exc}") from exc
        channel = await self._stream_channel()
        if channel is None:
            # No streams on this daemon: its one response is the only item.
            left = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
            yield await self.execute(image_path, request, timeout=left)
            return
        stream: MuxStream | None = None
        item: dict[str, object] | None = None
        try:
            if self._local:
                stream = await self._open_stream(encoded, payload, window, deadline)
                try:
                    item = await self._next_item(stream, path, deadline, timeout)
                except OCIAppRuntimeError as err:
                    if err.code == "not_found":
                        # The daemon does not open files by path: upload them.
                        self._local = False
                    elif err.code != "artifact_not_found":
                        raise
                    # else the daemon sees another file at that path.
                    stream = None
            if stream is None:
                digest = await _within(self._digest(path, st), deadline, timeout)
                encoded = self._encoded_digest(digest)
                retried = False
                while True:
                    await _within(self._ensure_uploaded(path, digest), deadline, timeout)
                    stream = await self._open_stream(encoded, payload, window, deadline)
                    try:
                        item = await self._next_item(stream, path, deadline, timeout)
                        break
                    except OCIAppRuntimeError as err:
                        if err.code == "artifact_not_found" and not retried:
                            # The daemon lost it: send it again, once.
                            self._uploaded.discard(digest)
                            retried = True
                            continue
                        raise
            while item is not None:
                yield item
                item = await self._next_item(stream, path, deadline, timeout)
        finally:
            if stream is not None:
                stream.close()

    async def _stream_channel(self) -> MuxChannel | None:
        """Returns the execute channel when the daemon takes stream requests on it."""

        channel = self._mux
        if channel is None or channel.broken is not None:
            channel = await self._channel()
        return channel if channel is not None and channel.streams else None

    async def _open_stream(
        self, encoded: tuple[int, bytes], payload: bytes, window: int, deadline: float | None
    ) -> MuxStream:
        channel = await self._stream_channel()
        if channel is None:
            raise DaemonUnavailableError(
                f"the runtime daemon at {self.url} no longer takes stream requests on its execute channel"
            )
        try:
            return await channel.stream(encoded, payload, window, deadline)
        except (OSError, ValueError) as exc:
            raise DaemonUnavailableError(
                f"the runtime daemon at {self.url} is unreachable: {exc!r}; "
                "check that ociapp-runtime serve runs there"
            ) from exc

    async def _next_item(
        self, stream: MuxStream, path: Path, deadline: float | None, caller_timeout: float | None
    ) -> dict[str, object] | None:
        """The stream's next item, decoded; None after the last. The wait
        ends at the caller's deadline, when there is one, and cancels the
        stream then. (Not with asyncio.timeout: between items the task runs
        the caller's loop body, which an expiring timeout would cancel.)"""

        timeout = self._execute_timeout
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - asyncio.get_running_loop().time()))
        try:
            item = await stream.next(timeout)
        except TimeoutError:
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                raise _caller_timeout(caller_timeout) from None
            raise RequestTimeoutError(
                f"the runtime daemon at {self.url} sent no item of the stream within {timeout:g}s"
            ) from None
        except MuxAnswerError as exc:
            raise _answer_error({"error": exc.error}, path) from None
        except (OSError, ValueError) as exc:
            raise DaemonUnavailableError(
                f"the runtime daemon at {self.url} is unreachable: {exc!r}; "
                "check that ociapp-runtime serve runs there"
            ) from exc
        return None if item is None else _decode_response(item)

    def _encoded_digest(self, digest: str) -> tuple[int, bytes]:
        """The execute channel's encoding of {"digest": digest}."""

        encoded = self._digest_fields.get(digest)
        if encoded is None:
            if len(self._digest_fields) >= 1024:
                self._digest_fields.clear()
            encoded = self._digest_fields[digest] = encode_fields({"digest": digest})
        return encoded

    def _resolve(
        self, image_path: Path | str
    ) -> tuple[Path, os.stat_result, dict[str, str], tuple[int, bytes]]:
        """Returns the artifact's absolute path, its stat and the fields
        naming it to a daemon on this host, as they are and encoded for the
        execute channel. A path seen in the last 100 ms
        is not resolved or stat'ed again (a file replaced at that path is
        noticed that late, as the runtime notices it), so that warm
        requests cost no system call here."""

        now = time.monotonic()
        key = image_path if isinstance(image_path, str) else str(image_path)
        hit = self._paths.get(key)
        if hit is not None and now - hit[4] < _RECHECK_AFTER:
            return hit[0], hit[1], hit[2], hit[3]
        path = Path(image_path).resolve()
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ArtifactLoadError(f"OCIApp artifact does not exist: {path}") from None
        except OSError as exc:
            raise ArtifactLoadError(f"cannot read OCIApp artifact {path}: {exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactLoadError(f"OCIApp artifact is not a regular file: {path}")
        fields = {"path": str(path), "file": _file_identity(st)}
        if hit is not None and hit[2] == fields:
            encoded = hit[3]
        else:
            encoded = encode_fields(fields)
        if len(self._paths) >= 1024:
            self._paths.clear()
        self._paths[key] = (path, st, fields, encoded, now)
        return path, st, fields, encoded

    async def _execute_on(
        self,
        fields: dict[str, str],
        encoded: tuple[int, bytes],
        route: str | None,
        payload: bytes,
        path: Path,
        deadline: float | None,
    ) -> dict[str, object]:
        """Executes on the execute channel (fields encoded as encoded),
        or with an HTTP request to route (None: the route by path) when the
        daemon has no channel; with the time left until deadline (the
        event loop's time), if any."""

        timeout = self._execute_timeout
        channel = self._mux
        if channel is None or channel.broken is not None:
            channel = await self._channel()
        if channel is not None:
            try:
                msg = await channel.call(encoded, payload, deadline)
            except TimeoutError:
                raise RequestTimeoutError(
                    f"the runtime daemon at {self.url} did not answer within {timeout:g}s"
                ) from None
            except (OSError, ValueError) as exc:
                raise DaemonUnavailableError(
                    f"the runtime daemon at {self.url} is unreachable: {exc!r}; "
                    "check that ociapp-runtime serve runs there"
                ) from exc
            if "payload" in msg:
                return _decode_response(msg["payload"])
            raise _answer_error(msg, path)
        if route is None:
            route = "/v1/local/execute?" + urlencode(fields)
        headers = {"Content-Type": _MSGPACK, "Accept": _MSGPACK}
        if deadline is not None:
            # A daemon from before deadlines ignores the header.
            left = deadline - asyncio.get_running_loop().time()
            headers[_DEADLINE_HEADER] = str(deadline_millis(left))
        resp = await self._send(
            "POST",
            route,
            body=payload,
            headers=headers,
            # A large body the daemon refuses (too large, unauthorized)
            # is then never sent, and the refusal is read, not lost to a
            # broken pipe.
            expect_continue=len(payload) > _EXPECT_CONTINUE_ABOVE,
            timeout=timeout,
        )
        if resp.status == 200:
            return _decode_response(resp.body)
        raise _error(resp, path)

    async def _channel(self) -> MuxChannel | None:
        """Returns the open execute channel, opening one if needed; None
        when the daemon has none."""

        if self._mux is not None and self._mux.broken is None:
            return self._mux
        if self._mux_off:
            return None
        async with self._mux_lock:
            if self._mux is not None and self._mux.broken is None:
                return self._mux
            if self._mux is not None:
                await self._mux.close()
                self._mux = None
            assert self._client is not None
            address = self._client.address
            try:
                self._mux = await asyncio.wait_for(
                    MuxChannel.open(address, self._token, self._ssl_context(address), self._execute_timeout), 30.0
                )
            except MuxUnsupported:
                self._mux_off = True
                return None
            except MuxRefused as exc:
                raise error_from_body(exc.status, exc.body) from None
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                raise DaemonUnavailableError(
                    f"the runtime daemon at {address} is unreachable: {exc!r}; "
                    "check that ociapp-runtime serve runs there"
                ) from exc
            return self._mux

    async def pools(self) -> list[dict[str, Any]]:
        """Lists the daemon's pools: per artifact, its containers and requests."""

        return (await self._get_json("/v1/pools"))["pools"]

    async def artifacts(self) -> list[dict[str, Any]]:
        """Lists the artifacts the daemon holds."""

        return (await self._get_json("/v1/artifacts"))["artifacts"]

    # The daemon.

    def _ssl_context(self, address: Address) -> ssl.SSLContext | None:
        if not address.tls:
            return None
        return ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else None)

    async def _spawn(self) -> None:
        binary = shutil.which(self._binary)
        if binary is None:
            raise OCIAppRuntimeError(
                f"cannot find the {self._binary!r} program: install ociapp-runtime, "
                f"pass binary=, or set {ENV_BINARY}; or use a running daemon with "
                f"url= or {ENV_URL}"
            )
        if self._runtime_root is not None:
            root = self._runtime_root
            root.mkdir(parents=True, exist_ok=True)
            state = root / "state"
        else:
            # Short, because socket paths under it must fit 108 bytes.
            root = self._own_dir = Path(tempfile.mkdtemp(prefix="ocirt-"))
            state = self._lock_user_state() or root / "state"
        self._state_dir = state
        sock = root / "daemon.sock"
        self._log_path = root / "daemon.log"
        args = [
            binary, "serve",
            "--listen", f"unix://{sock}",
            "--state-dir", str(state),
            "--stop-on-stdin-close",
            "--startup-timeout", _duration(self._startup_timeout),
            "--request-timeout", _duration(self._request_timeout),
            "--shutdown-timeout", _duration(self._shutdown_timeout),
            "--idle-timeout", _duration(self._idle_timeout),
            "--reaper-interval", _duration(self._reaper_interval),
        ]  # fmt: skip
        if self._engine is not None:
            args += self._engine.daemon_args()
        args += self._sandbox_args
        with self._log_path.open("ab") as log:
            # stdin stays open for the daemon's lifetime: when this process
            # dies, however, the pipe closes and the daemon stops.
            self._proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        self._client = Client(Address(unix_path=str(sock)))
        try:
            await self._wait_ready()
        except BaseException:
            await self._client.close()
            self._client = None
            with contextlib.suppress(Exception):
                await self._stop_daemon()
            self._proc = None
            self._release()
            raise

    def _lock_user_state(self) -> Path | None:
        """Locks the per-user state directory for this runtime's daemon and
        returns it, or returns None when another Runtime holds it (or it
        cannot be made)."""

        state = user_state_dir()
        # The daemon's runtime puts sockets at rt/<8>/<8>/app.sock under it,
        # which must fit a Unix socket address (107 bytes).
        if len(str(state / "rt")) + len("/12345678/12345678/app.sock") > 107:
            return None
        try:
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(state / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        self._state_lock = fd
        return state

    def _release(self) -> None:
        """Removes the temporary directory and unlocks the per-user state."""

        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
        if self._state_lock is not None:
            os.close(self._state_lock)
            self._state_lock = None

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DAEMON_START_TIMEOUT
        while True:
            if self._proc.returncode is not None:
                raise self._exit_error(self._proc.returncode)
            try:
                await self._health()
                return
            except DaemonUnavailableError:
                if loop.time() > deadline:
                    raise OCIAppRuntimeError(
                        f"ociapp-runtime serve did not answer within {_DAEMON_START_TIMEOUT:g}s"
                        f"{self._log_tail()}"
                    ) from None
            await asyncio.sleep(0.05)

    def _exit_error(self, code: int) -> OCIAppRuntimeError:
        tail = self._log_tail()
        if code == _EXIT_ENGINE_UNAVAILABLE:
            return EngineUnavailableError(f"the container engine cannot be reached{tail}")
        return OCIAppRuntimeError(f"ociapp-runtime serve exited with status {code}{tail}")

    def _log_tail(self, lines: int = 20) -> str:
        if self._log_path is None:
            return ""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        tail = text.strip().splitlines()[-lines:]
        return "; daemon log:\n  | " + "\n  | ".join(tail) if tail else ""

    async def _stop_daemon(self) -> None:
        proc = self._proc
        assert proc is not None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if proc.stdin is not None:
            proc.stdin.close()
        # The daemon drains (nothing is in flight once the runtime closes),
        # then stops each container within the shutdown timeout.
        limit = self._shutdown_timeout + 30.0
        try:
            code = await asyncio.wait_for(proc.wait(), limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise InstanceShutdownError(
                f"ociapp-runtime serve did not stop within {limit:g}s and was killed; "
                f"containers may remain until the next daemon removes them{self._log_tail()}"
            ) from None
        if code != 0:
            raise InstanceShutdownError(f"ociapp-runtime serve exited with status {code}{self._log_tail()}")

    # Requests.

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        body_file: Path | None = None,
        headers: dict[str, str] | None = None,
        expect_continue: bool = False,
        timeout: float | None = None,
    ) -> Response:
        assert self._client is not None
        all_headers = dict(headers or {})
        if self._token:
            all_headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with asyncio.timeout(timeout):
                return await self._client.request(
                    method,
                    path,
                    headers=all_headers,
                    body=body,
                    body_file=body_file,
                    expect_continue=expect_continue,
                )
        except TimeoutError:
            raise RequestTimeoutError(
                f"the runtime daemon at {self._client.address} did not answer within {timeout:g}s"
            ) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise DaemonUnavailableError(
                f"the runtime daemon at {self._client.address} is unreachable: {exc!r}; "
                "check that ociapp-runtime serve runs there"
            ) from exc

    async def _health(self) -> None:
        resp = await self._send("GET", "/healthz", timeout=10.0)
        if resp.status != 200:
            raise _error(resp, None)

    async def _get_json(self, path: str) -> dict[str, Any]:
        if not self._started:
            raise OCIAppRuntimeError("runtime must be started first")
        resp = await self._send("GET", path, timeout=30.0)
        if resp.status != 200:
            raise _error(resp, None)
        return json.loads(resp.body)

    async def _digest(self, path: Path, st: os.stat_result) -> str:
        # One version of a file: a rebuilt artifact has another inode, size
        # or modification time, so a warm execute costs a stat, not a hash.
        key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = self._digests.get(key)
        if digest is None:
            try:
                digest = await asyncio.to_thread(_hash_file, path)
            except OSError as exc:
                raise ArtifactLoadError(f"cannot read OCIApp artifact {path}: {exc}") from exc
            if len(self._digests) >= 1024:
                self._digests.clear()
            self._digests[key] = digest
        return digest

    async def _ensure_uploaded(self, path: Path, digest: str) -> None:
        """Makes sure the daemon holds the artifact, asking before sending
        it; concurrent first executes share one upload."""

        while digest not in self._uploaded:
            pending = self._uploading.get(digest)
            if pending is None:
                await self._upload_shared(path, digest)
                return
            try:
                await asyncio.shield(pending)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not pending.cancelled() or (current is not None and current.cancelling()):
                    raise
                # The uploader was cancelled, not this task: try again.

    async def _upload_shared(self, path: Path, digest: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._uploading[digest] = fut
        try:
            await self._upload(path, digest)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here; waiters still get it
            raise
        else:
            self._uploaded.add(digest)
            fut.set_result(None)
        finally:
            del self._uploading[digest]

    async def _upload(self, path: Path, digest: str) -> None:
        resp = await self._send("HEAD", f"/v1/artifacts/{digest}", timeout=30.0)
        if resp.status == 200:
            return
        if resp.status != 404:
            raise _error(resp, path)
        resp = await self._send(
            "PUT",
            f"/v1/artifacts/{digest}",
            body_file=path,
            headers={"Content-Type": "application/vnd.ociapp.artifact"},
            expect_continue=True,
        )
        if resp.status not in (200, 201):
            raise _error(resp, path)


def _check_timeout(timeout: float | None) -> float | None:
    """Checks a call's ``timeout=``: seconds, or None (as is infinity)."""

    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"timeout must be a non-negative number of seconds, or None, got {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


def _deadline(timeout: float | None) -> float | None:
    """The event loop's time at which a call given ``timeout`` seconds
    ends; None without one."""

    seconds = _check_timeout(timeout)
    return None if seconds is None else asyncio.get_running_loop().time() + seconds


def _caller_timeout(timeout: float | None) -> RequestTimeoutError:
    return RequestTimeoutError(f"the caller's timeout of {timeout:g}s passed before the request completed")


async def _within(aw: Awaitable[T], deadline: float | None, timeout: float | None) -> T:
    """Awaits aw until deadline (the event loop's time; None: no bound),
    then cancels it and raises RequestTimeoutError; a timeout of an
    enclosing scope stays that scope's."""

    if deadline is None:
        return await aw
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            return await aw
    except TimeoutError:
        if not scope.expired():
            raise
        raise _caller_timeout(timeout) from None


def _sandbox_args(**settings: object) -> list[str]:
    """Turns the sandbox and pool settings that are set into daemon flags."""

    args: list[str] = []
    for name, value in settings.items():
        if value is None:
            continue
        if name == "network":
            if not isinstance(value, str) or not value:
                raise TypeError(f"network must be a network mode such as 'none' or 'bridge', got {value!r}")
        elif name == "memory":
            if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, int) and value < 0):
                raise TypeError(f"memory must be bytes (an int, 0 for no limit) or text such as '512m', got {value!r}")
        elif name == "cpus":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"cpus must be a non-negative number, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        args += ["--" + name.replace("_", "-"), str(value)]
    return args


def _duration(seconds: float) -> str:
    """Formats seconds as a Go duration, to the microsecond."""

    return f"{max(1, round(seconds * 1_000_000))}us"


def _file_identity(st: os.stat_result) -> str:
    """One version of a file, as the daemon compares it: device, inode,
    size and modification time in nanoseconds."""

    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _decode_response(body: bytes) -> dict[str, object]:
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ResponseProtocolError(f"the response is not valid msgpack: {exc}") from exc
    if not isinstance(value, dict):
        raise ResponseProtocolError("the response is not a msgpack map")
    return value


def _error(resp: Response, path: Path | None) -> OCIAppRuntimeError:
    body: Any = resp.body
    try:
        if resp.content_type == _MSGPACK:
            body = msgpack.unpackb(resp.body, raw=False, strict_map_key=False)
        elif resp.content_type == "application/json":
            body = json.loads(resp.body)
    except ValueError:
        pass
    if not resp.body and "ociapp-error-code" in resp.headers:
        # HEAD answers carry the code in a header only.
        body = {"code": resp.headers["ociapp-error-code"], "message": f"HTTP {resp.status} {resp.reason}"}
    return _with_path(error_from_body(resp.status, body), path)


def _answer_error(msg: dict[str, Any], path: Path) -> OCIAppRuntimeError:
    """The exception for an error answer on the execute channel."""

    try:
        body: Any = msgpack.unpackb(msg["error"], raw=False, strict_map_key=False)
    except (ValueError, KeyError, msgpack.UnpackException):
        body = msg
    code = body.get("code") if isinstance(body, dict) else None
    return _with_path(error_from_body(STATUS_BY_CODE.get(str(code), 500), body), path)


def _with_path(err: OCIAppRuntimeError, path: Path | None) -> OCIAppRuntimeError:
    if path is not None and isinstance(err, ArtifactLoadError):
        err.args = (f"cannot use OCIApp artifact {path}: {err.args[0]}",)
    return err
