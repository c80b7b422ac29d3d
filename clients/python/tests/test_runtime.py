"""The Runtime against a real ociapp-runtime daemon and real containers."""

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import containers_of
from ociapp_runtime import (
    ArtifactLoadError,
    EngineUnavailableError,
    InstanceStartupError,
    OCIAppRuntimeError,
    OverloadedError,
    RemoteExecutionError,
    RequestTimeoutError,
    RequestTooLargeError,
    ResponseProtocolError,
    Runtime,
    UnauthorizedError,
    WorkerCrashError,
)
from ociapp_runtime._mux import encode_fields

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "runtime_demo.py"


async def metric(runtime: Runtime, series: str) -> float:
    resp = await runtime._send("GET", "/metrics")
    for line in resp.body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def test_execute_reuses_one_container(binary: str, app: Path) -> None:
    async with Runtime(binary=binary, idle_timeout=60.0) as runtime:
        first = await runtime.execute(app, {"value": "hello"})
        second = await runtime.execute(str(app), {"value": "world"})
        assert (first, second) == ({"value": "hello"}, {"value": "world"})
        pools = await runtime.pools()
        assert [(p["artifact"], p["containers"]) for p in pools] == [("testapp 0.1.0", 1)]
        assert runtime.url is not None and runtime.url.startswith("unix://")


async def test_upload_once(binary: str, app: Path) -> None:
    async with Runtime(binary=binary, uploads=True) as runtime:
        results = await asyncio.gather(*(runtime.execute(app, {"value": str(i)}) for i in range(32)))
        assert results == [{"value": str(i)} for i in range(32)]
        await runtime.execute(app, {"value": "again"})
        assert await metric(runtime, "ociapp_daemon_uploads_total") == 1
        assert await metric(runtime, 'ociapp_daemon_http_requests_total{route="artifact",code="404"}') == 1
        assert len(await runtime.artifacts()) == 1


async def test_waiting_caller_survives_a_cancelled_upload(
    binary: str, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_upload = Runtime._upload
    calls: list[str] = []

    async def upload(self: Runtime, path: Path, digest: str) -> None:
        calls.append(digest)
        if len(calls) == 1:
            await asyncio.Event().wait()  # until cancelled
        await real_upload(self, path, digest)

    monkeypatch.setattr(Runtime, "_upload", upload)
    async with Runtime(binary=binary, uploads=True) as runtime:
        first = asyncio.create_task(runtime.execute(app, {"value": "first"}))
        while not calls:
            await asyncio.sleep(0.01)
        second = asyncio.create_task(runtime.execute(app, {"value": "second"}))
        await asyncio.sleep(0.1)  # the second waits on the first's upload
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 60) == {"value": "second"}
        assert len(calls) == 2


async def test_same_host_artifacts_are_not_sent(binary: str, app: Path, tmp_path: Path) -> None:
    """The daemon a Runtime starts opens the caller's file where it lies:
    nothing is hashed by the client or uploaded; a rebuilt file is run as
    the new version."""

    # A state of its own, so that the store is empty to begin with.
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"root-{secrets.token_hex(3)}"
    async with Runtime(binary=binary, runtime_root=root) as runtime:
        assert await runtime.execute(app, {"value": "hi"}) == {"value": "hi"}
        assert await metric(runtime, "ociapp_daemon_uploads_total") == 0
        assert await runtime.artifacts() == []
        assert runtime._digests == {}
        # On the execute channel: one upgrade, one request.
        assert await metric(runtime, 'ociapp_daemon_http_requests_total{route="mux",code="101"}') == 1
        assert await metric(runtime, 'ociapp_daemon_http_requests_total{route="mux_execute",code="200"}') == 1
        # A copy elsewhere is another file, run all the same.
        copy = tmp_path / "copy.ociapp"
        copy.write_bytes(app.read_bytes())
        assert await runtime.execute(copy, {"value": "copy"}) == {"value": "copy"}
        # A daemon that sees another file at the path (another mount
        # namespace) is sent the caller's.
        with_other = Runtime(url=runtime.url)
        async with with_other:
            orig = with_other._resolve

            def resolve(image_path: Path):  # type: ignore[no-untyped-def]
                path, st, fields, _ = orig(image_path)
                fields = {**fields, "file": "0" + fields["file"]}  # not the file the daemon sees
                return path, st, fields, encode_fields(fields)

            with_other._resolve = resolve  # type: ignore[method-assign]
            assert await with_other.execute(copy, {"value": "sent"}) == {"value": "sent"}
            assert with_other._local  # still asked by path for other files
        assert await metric(runtime, "ociapp_daemon_uploads_total") == 1


async def test_execute_channel(binary: str, app: Path) -> None:
    """64 concurrent requests share one execute channel, answered as they
    complete; a closed channel is opened again."""

    async with Runtime(binary=binary) as runtime:
        results = await asyncio.gather(
            *(runtime.execute(app, {"op": "sleep", "millis": (64 - i) * 5, "value": str(i)}) for i in range(64))
        )
        assert results == [{"value": str(i)} for i in range(64)]
        assert await metric(runtime, 'ociapp_daemon_http_requests_total{route="mux",code="101"}') == 1
        assert runtime._mux is not None
        await runtime._mux.close()  # as if the connection broke
        assert await runtime.execute(app, {"value": "again"}) == {"value": "again"}
        assert await metric(runtime, 'ociapp_daemon_http_requests_total{route="mux",code="101"}') == 2


async def test_app_errors(binary: str, app: Path) -> None:
    async with Runtime(binary=binary) as runtime:
        with pytest.raises(RemoteExecutionError) as info:
            await runtime.execute(app, {"op": "fail", "value": "it broke", "millis": 7})
        err = info.value
        assert (err.error_type, err.message, err.details) == ("Boom", "it broke", {"reason": "asked", "millis": 7})
        assert err.error.error_type == "Boom" and str(err) == "Boom: it broke"

        with pytest.raises(RemoteExecutionError) as info:
            await runtime.execute(app, {"value": 5})
        assert info.value.error_type == "ValidationError"
        assert info.value.details["errors"][0]["loc"] == ["value"]
        # The container stays in service.
        assert await runtime.execute(app, {"value": "fine"}) == {"value": "fine"}


async def test_bytes_in_error_details(binary: str, app: Path, artifacts: dict[str, Path]) -> None:
    """Bytes that are not UTF-8, echoed back in a validation error's
    details, arrive as the same bytes: by the Python echo (pydantic) and
    by the Go test application."""

    async with Runtime(binary=binary) as runtime:
        for path in (artifacts["echo-app"], app):
            with pytest.raises(RemoteExecutionError) as info:
                await runtime.execute(path, {"value": b"\xff"})
            assert info.value.error_type == "ValidationError", info.value
            (issue,) = info.value.details["errors"]
            assert (issue["loc"][-1], issue["input"]) == ("value", b"\xff"), issue
        # Bytes that are UTF-8 are a string, as in pydantic's lax mode.
        assert await runtime.execute(app, {"value": b"fine"}) == {"value": "fine"}


async def test_request_timeout(binary: str, app: Path) -> None:
    async with Runtime(binary=binary, request_timeout=1.0) as runtime:
        with pytest.raises(RequestTimeoutError):
            await runtime.execute(app, {"op": "sleep", "millis": 5000})


async def test_startup_failure(binary: str, artifacts: dict[str, Path]) -> None:
    async with Runtime(binary=binary) as runtime:
        with pytest.raises(InstanceStartupError) as info:
            await runtime.execute(artifacts["exitstart"], {})
        assert info.value.exit_code == 3
        assert "ImportError" in info.value.logs


async def test_worker_crash(binary: str, app: Path) -> None:
    async with Runtime(binary=binary) as runtime:
        with pytest.raises(WorkerCrashError) as info:
            await runtime.execute(app, {"op": "crash"})
        assert isinstance(info.value, ResponseProtocolError)
        assert info.value.exit_code == 3
        assert await runtime.execute(app, {"value": "after"}) == {"value": "after"}


async def test_artifact_errors(binary: str, app: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.ociapp"
    data = bytearray(app.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    async with Runtime(binary=binary) as runtime:
        with pytest.raises(ArtifactLoadError, match="does not exist"):
            await runtime.execute(tmp_path / "missing.ociapp", {})
        with pytest.raises(ArtifactLoadError, match="not a regular file"):
            await runtime.execute(tmp_path, {})
        with pytest.raises(ArtifactLoadError) as info:
            await runtime.execute(corrupt, {})
        assert info.value.code == "artifact_invalid"
        assert info.value.info["fault"] == "digest_mismatch"
        assert str(corrupt) in str(info.value)


async def test_request_too_large(binary: str, app: Path) -> None:
    async with Runtime(binary=binary) as runtime:
        with pytest.raises(RequestTooLargeError) as info:
            await runtime.execute(app, {"value": "x" * (17 << 20)})
        assert info.value.limit == (16 << 20) - 1024


async def test_unencodable_request(binary: str, app: Path) -> None:
    async with Runtime(binary=binary) as runtime:
        with pytest.raises(OCIAppRuntimeError, match="msgpack"):
            await runtime.execute(app, {"x": object()})


async def test_requires_start(app: Path) -> None:
    runtime = Runtime()
    with pytest.raises(OCIAppRuntimeError, match="must be started"):
        await runtime.execute(app, {"value": "x"})


def test_arguments() -> None:
    with pytest.raises(TypeError, match="DockerAdapter"):
        Runtime(engine=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="request_timeout"):
        Runtime(request_timeout=0)


async def test_engine_unavailable(binary: str, tmp_path: Path) -> None:
    runtime = Runtime(binary=binary, engine=f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(EngineUnavailableError):
        await runtime.start()


async def test_missing_binary() -> None:
    with pytest.raises(OCIAppRuntimeError, match="cannot find"):
        await Runtime(binary="/nonexistent/ociapp-runtime").start()


async def test_close_stops_daemon_and_containers(binary: str, app: Path, tmp_path: Path) -> None:
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"root-{secrets.token_hex(3)}"
    async with Runtime(binary=binary, runtime_root=root, uploads=True) as runtime:
        await runtime.execute(app, {"value": "x"})
        assert len(await containers_of(root / "state")) == 1
        daemon = runtime._proc
    assert daemon is not None and daemon.returncode == 0
    assert await containers_of(root / "state") == []
    # The uploaded artifact stays in a runtime_root the caller chose...
    async with Runtime(binary=binary, runtime_root=root, uploads=True) as runtime:
        await runtime.execute(app, {"value": "y"})
        assert await metric(runtime, "ociapp_daemon_uploads_total") == 0


async def test_attach(binary: str, app: Path) -> None:
    async with Runtime(binary=binary) as owner:
        async with Runtime(url=owner.url) as attached:
            assert await attached.execute(app, {"value": "via url"}) == {"value": "via url"}
        # Closing the attached runtime leaves the daemon running.
        assert await owner.execute(app, {"value": "still"}) == {"value": "still"}


async def test_tcp_with_token(binary: str, app: Path, tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"tcp-{secrets.token_hex(3)}"
    proc = await asyncio.create_subprocess_exec(
        binary, "serve", "--listen", "tcp://127.0.0.1:0", "--state-dir", str(root),
        "--container-concurrency", "1", "--max-containers", "1", "--queue-size", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "OCIAPP_RUNTIME_TOKEN": token},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        port = re.fullmatch(r"listening on tcp://127\.0\.0\.1:(\d+)\n", line)
        assert port, line
        url = f"http://127.0.0.1:{port[1]}"
        async with Runtime(url=url, token=token) as runtime:
            assert await runtime.execute(app, {"value": "over tcp"}) == {"value": "over tcp"}
            # One container, one request at a time, one waiting: the rest
            # are refused.
            results = await asyncio.gather(
                *(runtime.execute(app, {"op": "sleep", "millis": 800}) for _ in range(6)),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, OverloadedError)]
            assert refused and all(r == {"value": ""} or isinstance(r, OverloadedError) for r in results), results
        for wrong in (None, token + "x"):
            async with Runtime(url=url, token=wrong or "") as runtime:
                with pytest.raises(UnauthorizedError):
                    await runtime.execute(app, {"value": "x"})
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0


async def test_daemon_stops_when_its_parent_dies(binary: str, app: Path) -> None:
    """A parent killed before it could close its Runtime takes the daemon
    and its containers with it."""

    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"orphan-{secrets.token_hex(3)}"
    script = f"""
import asyncio, os
from ociapp_runtime import Runtime

async def main():
    runtime = Runtime(binary={binary!r}, runtime_root={str(root)!r})
    await runtime.start()
    await runtime.execute({str(app)!r}, {{"value": "x"}})
    print(runtime._proc.pid, flush=True)
    os._exit(0)

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    pid = int(out.stdout.strip())
    for _ in range(600):
        if not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"the orphaned daemon {pid} still runs")
    assert await containers_of(root / "state") == []


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_demo(binary: str, artifacts: dict[str, Path]) -> None:
    """The demo against the original's echo app (a Python app, built by
    ociapp-build), with ociapp-runtime found on PATH."""

    env = {**os.environ, "PATH": f"{Path(binary).parent}:{os.environ['PATH']}"}
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), str(artifacts["echo-app"])],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == "{'value': 'hello'}\n{'value': 'world'}\n"


async def test_default_state_is_per_user(binary: str, app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = Path(os.environ.get("TMPDIR", "/tmp")) / f"xdg-{secrets.token_hex(3)}"
    monkeypatch.setenv("XDG_STATE_HOME", str(xdg))
    state = xdg / "ociapp-runtime" / "python"
    async with Runtime(binary=binary, uploads=True) as first:
        assert first.state_dir == state
        await first.execute(app, {"value": "x"})
        assert await metric(first, "ociapp_daemon_uploads_total") == 1
        # A second Runtime meanwhile keeps its state apart.
        async with Runtime(binary=binary) as second:
            assert second.state_dir is not None and second.state_dir != state
            assert await second.execute(app, {"value": "y"}) == {"value": "y"}
    # The next default Runtime finds the upload of the first.
    async with Runtime(binary=binary, uploads=True) as again:
        assert again.state_dir == state
        assert await again.execute(app, {"value": "z"}) == {"value": "z"}
        assert await metric(again, "ociapp_daemon_uploads_total") == 0


async def test_a_cancelled_execute_cancels_the_handler(binary: str, artifacts: dict[str, Path]) -> None:
    """A task that gives up on an execute (cancelled, or under
    asyncio.timeout) has its request cancelled in the container, for an
    artifact that declares the cancel capability; the container then
    answers the next request."""

    capable = artifacts["capable"]
    async with Runtime(binary=binary) as runtime:

        async def cancelled() -> int:
            return (await runtime.execute(capable, {"op": "cancelled"}))["n"]

        assert await cancelled() == 0
        task = asyncio.create_task(runtime.execute(capable, {"op": "block"}))
        await asyncio.sleep(0.3)  # the request is in the handler, or will be
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await runtime.execute(capable, {"op": "block"})
        deadline = asyncio.get_running_loop().time() + 30
        while await cancelled() != 2:
            assert asyncio.get_running_loop().time() < deadline, "the handlers were not cancelled"
            await asyncio.sleep(0.01)
        # The handler sees the request's deadline: the daemon's request
        # timeout (30 s by default).
        left = (await runtime.execute(capable, {"op": "deadline"}))["n"]
        assert 0 < left <= 30_000


@pytest.mark.parametrize("channel", [True, False])
async def test_the_callers_timeout_reaches_the_handler(
    binary: str, artifacts: dict[str, Path], channel: bool
) -> None:
    """execute(..., timeout=) and stream(..., timeout=) give the handler the
    caller's time left as its deadline, on the execute channel and over
    HTTP; a handler that outlives it is cancelled and the call raises
    RequestTimeoutError; a time already up never runs the handler."""

    capable = artifacts["capable"]
    async with Runtime(binary=binary) as runtime:
        if not channel:
            runtime._mux_off = True  # as with a daemon without the channel

        async def cancelled() -> int:
            return (await runtime.execute(capable, {"op": "cancelled"}))["n"]

        assert await cancelled() == 0  # warm: no deadline spent starting it
        left = (await runtime.execute(capable, {"op": "deadline"}, timeout=2.0))["n"]
        assert 1000 < left <= 2000
        (item,) = [item async for item in runtime.stream(capable, {"op": "deadline"}, timeout=2.0)]
        assert 1000 < item["n"] <= 2000

        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(RequestTimeoutError, match="caller's"):
            await runtime.execute(capable, {"op": "block"}, timeout=0.3)
        assert loop.time() - start < 5
        with pytest.raises(RequestTimeoutError, match="caller's"):
            async for _ in runtime.stream(capable, {"op": "block"}, timeout=0.3):
                pytest.fail("a blocked handler sent an item")
        want = 2
        deadline = loop.time() + 30
        while await cancelled() != want:
            assert loop.time() < deadline, "the handlers were not cancelled"
            await asyncio.sleep(0.01)

        # Sent with no time left, the request is answered without running.
        # (The blocked execute above may have been answered 504 too, when
        # the daemon's deadline passed before the client's cancel came.)
        series = 'ociapp_daemon_http_requests_total{route="mux_execute",code="504"}'
        answered = await metric(runtime, series) if channel else 0
        with pytest.raises(RequestTimeoutError):
            await runtime.execute(capable, {"op": "block"}, timeout=0)
        if channel:
            while await metric(runtime, series) != answered + 1:
                assert loop.time() < deadline, "the daemon did not answer the late request"
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert await cancelled() == want

        with pytest.raises(ValueError, match="timeout"):
            await runtime.execute(capable, {"op": "deadline"}, timeout=-1)


@pytest.mark.parametrize("uploads", [False, True])
async def test_stream_of_handlers_that_do_not_stream(
    binary: str, app: Path, artifacts: dict[str, Path], uploads: bool
) -> None:
    """A handler that does not stream gives its one response as the only
    item of a stream, and its error as the stream's error; the requests
    travel as stream requests, by path or by digest."""

    # A state of its own, so that the store is empty to begin with.
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"root-{secrets.token_hex(3)}"
    async with Runtime(binary=binary, runtime_root=root, uploads=uploads) as runtime:
        assert [item async for item in runtime.stream(app, {"value": "hi"})] == [{"value": "hi"}]
        # A stream's handler has its caller's deadline, not the request
        # timeout (which bounds each wait for an item): none without a
        # timeout=, the time left of the caller's with one.
        (deadline,) = [item async for item in runtime.stream(artifacts["capable"], {"op": "deadline"})]
        assert deadline["n"] == -1
        (deadline,) = [item async for item in runtime.stream(artifacts["capable"], {"op": "deadline"}, timeout=5.0)]
        assert 0 < deadline["n"] <= 5000
        items = []
        with pytest.raises(RemoteExecutionError) as info:
            async for item in runtime.stream(app, {"op": "fail", "value": "it broke", "millis": 7}):
                items.append(item)
        assert items == []
        assert (info.value.error_type, info.value.details) == ("Boom", {"reason": "asked", "millis": 7})
        with pytest.raises(WorkerCrashError):
            async for _ in runtime.stream(app, {"op": "crash"}):
                pass
        assert await metric(runtime, 'ociapp_daemon_http_requests_total{route="mux_stream",code="200"}') == 3
        assert await metric(runtime, 'ociapp_daemon_http_requests_total{route="mux_execute",code="200"}') == 0
        assert await metric(runtime, "ociapp_daemon_uploads_total") == (2 if uploads else 0)


async def test_a_cancelled_stream_cancels_the_handler(binary: str, artifacts: dict[str, Path]) -> None:
    """A task that gives up on a stream has its handler cancelled in the
    container (a cancel frame), as for an execute."""

    capable = artifacts["capable"]
    async with Runtime(binary=binary) as runtime:

        async def cancelled() -> int:
            return (await runtime.execute(capable, {"op": "cancelled"}))["n"]

        assert await cancelled() == 0
        for _ in range(2):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    async for _ in runtime.stream(capable, {"op": "block"}):
                        pytest.fail("a blocked handler sent an item")
        deadline = asyncio.get_running_loop().time() + 30
        while await cancelled() != 2:
            assert asyncio.get_running_loop().time() < deadline, "the handlers were not cancelled"
            await asyncio.sleep(0.01)
        assert runtime._mux is not None and runtime._mux._streams == {}


async def test_a_stream_of_items(binary: str, artifacts: dict[str, Path]) -> None:
    """A handler's 10,000 items arrive complete and in order; one that fails
    gives its items, then its error; a loop that stops taking items holds
    the handler, with at most a window held here, and leaving it cancels
    the handler."""

    streamer = artifacts["streamer"]
    async with Runtime(binary=binary) as runtime:

        async def counter(op: str) -> int:
            (item,) = [item async for item in runtime.stream(streamer, {"op": op})]
            return item["i"]

        n = 0
        async for item in runtime.stream(streamer, {"count": 10_000, "size": 8}):
            assert item == {"i": n, "pad": "x" * 8}
            n += 1
        assert n == 10_000

        items = []
        with pytest.raises(RemoteExecutionError) as info:
            async for item in runtime.stream(streamer, {"count": 10, "fail_at": 3}):
                items.append(item["i"])
        assert items == [0, 1, 2]
        assert (info.value.error_type, info.value.message) == ("StreamFailed", "failed at 3")

        # The loop holds its first item: the window fills here, the
        # daemon's and the container's fill behind it, and the handler
        # waits for credit.
        size = 64 << 10
        stream = runtime.stream(streamer, {"count": -1, "size": size})
        first = await anext(stream)
        assert first["i"] == 0
        assert runtime._mux is not None
        (held,) = runtime._mux._streams.values()
        deadline = asyncio.get_running_loop().time() + 30
        while held.buffered[0] < held.window - 1:
            assert asyncio.get_running_loop().time() < deadline, f"{held.buffered} buffered"
            await asyncio.sleep(0.01)
        for _ in range(3):
            items_held, bytes_held = held.buffered
            assert items_held <= held.window and bytes_held <= held.window * (size + 64)
            # This window, the daemon's one item, the runtime's window and
            # the one waiting in the handler.
            assert await counter("produced") <= 2 * held.window + 2
            await asyncio.sleep(0.1)
        await stream.aclose()
        deadline = asyncio.get_running_loop().time() + 30
        while await counter("cancelled") != 1:
            assert asyncio.get_running_loop().time() < deadline, "the handler was not cancelled"
            await asyncio.sleep(0.01)
