"""The original runtime's API, used as its README example and
example/runtime_demo.py use it, against a real daemon and real containers;
and each of its exceptions, raised in the situation its name describes."""

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from conftest import containers_of
from ociapp_runtime import (
    ArtifactLoadError,
    DockerAdapter,
    InstanceShutdownError,
    InstanceStartupError,
    KubernetesAdapter,
    OCIAppRuntimeError,
    OverloadedError,
    RemoteExecutionError,
    RequestTimeoutError,
    ResponseProtocolError,
    Runtime,
)
from ociapp_runtime._http import Address, Client


async def test_readme_example(artifacts: dict[str, Path]) -> None:
    artifact_path = artifacts["echo-app"]
    async with Runtime(
        engine=DockerAdapter(),
        startup_timeout=10.0,
        request_timeout=30.0,
        shutdown_timeout=10.0,
        idle_timeout=60.0,
        reaper_interval=1.0,
    ) as runtime:
        first = await runtime.execute(artifact_path, {"value": "hello"})
        second = await runtime.execute(artifact_path, {"value": "world"})
    assert (first, second) == ({"value": "hello"}, {"value": "world"})


async def test_runtime_demo_usage(artifacts: dict[str, Path]) -> None:
    artifact_path = Path(artifacts["echo-app"])
    async with Runtime(idle_timeout=5.0) as runtime:
        first = await runtime.execute(artifact_path, {"value": "hello"})
        second = await runtime.execute(artifact_path, {"value": "world"})
    assert (first, second) == ({"value": "hello"}, {"value": "world"})


def test_defaults_are_the_originals() -> None:
    runtime = Runtime()
    assert (
        runtime._startup_timeout,
        runtime._request_timeout,
        runtime._shutdown_timeout,
        runtime._idle_timeout,
        runtime._reaper_interval,
    ) == (10.0, 30.0, 10.0, 900.0, 1.0)


async def test_not_started_is_an_ociapp_runtime_error(artifacts: dict[str, Path]) -> None:
    with pytest.raises(OCIAppRuntimeError, match="must be started"):
        await Runtime(engine=DockerAdapter()).execute(artifacts["echo-app"], {"value": "x"})


async def test_artifact_load_error(artifacts: dict[str, Path], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.ociapp"
    data = bytearray(artifacts["testapp"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    async with Runtime(engine=DockerAdapter()) as runtime:
        with pytest.raises(ArtifactLoadError):
            await runtime.execute(tmp_path / "missing.ociapp", {"value": "x"})
        with pytest.raises(ArtifactLoadError):
            await runtime.execute(corrupt, {"value": "x"})


async def test_instance_startup_error(artifacts: dict[str, Path]) -> None:
    # An app whose entrypoint fails at start (the original raised
    # InstanceShutdownError here: docs/daemon.md).
    async with Runtime(engine=DockerAdapter(), startup_timeout=10.0) as runtime:
        with pytest.raises(InstanceStartupError):
            await runtime.execute(artifacts["exitstart"], {})


async def test_request_timeout_error(artifacts: dict[str, Path]) -> None:
    async with Runtime(engine=DockerAdapter(), request_timeout=1.0) as runtime:
        with pytest.raises(RequestTimeoutError):
            await runtime.execute(artifacts["testapp"], {"op": "sleep", "millis": 5000})


async def test_response_protocol_error(artifacts: dict[str, Path]) -> None:
    # The worker's connection breaks: the container died mid-request.
    async with Runtime(engine=DockerAdapter()) as runtime:
        with pytest.raises(ResponseProtocolError):
            await runtime.execute(artifacts["testapp"], {"op": "crash"})


async def test_remote_execution_error(artifacts: dict[str, Path]) -> None:
    async with Runtime(engine=DockerAdapter()) as runtime:
        with pytest.raises(RemoteExecutionError) as info:
            await runtime.execute(artifacts["echo-app"], {"value": 5})
    assert info.value.error.error_type == "ValidationError"
    assert str(info.value).startswith("ValidationError: ")


async def test_instance_shutdown_error(artifacts: dict[str, Path]) -> None:
    # The daemon, and with it the containers' owner, died: the runtime
    # cannot be stopped cleanly.
    runtime = Runtime(engine=DockerAdapter())
    await runtime.start()
    await runtime.execute(artifacts["testapp"], {"value": "x"})
    assert runtime._proc is not None
    runtime._proc.send_signal(signal.SIGKILL)
    await runtime._proc.wait()
    with pytest.raises(InstanceShutdownError):
        await runtime.close()


async def _inspect(container_id: str) -> dict:
    client = Client(Address(unix_path="/var/run/docker.sock"))
    try:
        resp = await client.request("GET", f"/containers/{container_id}/json")
        assert resp.status == 200, resp.body
        return json.loads(resp.body)
    finally:
        await client.close()


async def test_sandbox_and_pool_settings(artifacts: dict[str, Path]) -> None:
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"sandbox-{os.getpid()}"
    async with Runtime(
        runtime_root=root,
        network="none",
        memory="256m",
        cpus=0.5,
        max_containers=1,
        min_containers=0,
        container_concurrency=1,
        queue_size=1,
    ) as runtime:
        app = artifacts["testapp"]
        assert await runtime.execute(app, {"value": "x"}) == {"value": "x"}
        (summary,) = await containers_of(root / "state")
        host = (await _inspect(summary["Id"]))["HostConfig"]
        assert (host["Memory"], host["NanoCpus"], host["NetworkMode"]) == (256 << 20, 500_000_000, "none")
        # One container, one request at a time, one waiting: the rest are
        # refused.
        results = await asyncio.gather(
            *(runtime.execute(app, {"op": "sleep", "millis": 800}) for _ in range(6)),
            return_exceptions=True,
        )
        assert any(isinstance(r, OverloadedError) for r in results), results
        assert all(r == {"value": ""} or isinstance(r, OverloadedError) for r in results), results


def test_settings_checked() -> None:
    with pytest.raises(ValueError, match="max_containers"):
        Runtime(max_containers=-1)
    with pytest.raises(ValueError, match="queue_size"):
        Runtime(queue_size=True)
    with pytest.raises(TypeError, match="memory"):
        Runtime(memory=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="its own"):
        Runtime(url="unix:///x.sock", memory="1g")


def test_engine_adapters() -> None:
    assert DockerAdapter().daemon_args() == []
    assert DockerAdapter("unix:///d.sock").daemon_args() == ["--docker-host", "unix:///d.sock"]
    assert KubernetesAdapter().daemon_args() == ["--engine", "kubernetes"]
    assert KubernetesAdapter(namespace="apps", kubeconfig="/k").daemon_args() == [
        "--engine", "kubernetes", "--kubeconfig", "/k", "--namespace", "apps",
    ]  # fmt: skip
    # A Docker address as a string is still accepted, as before.
    assert Runtime(engine="unix:///d.sock")._engine.daemon_args() == ["--docker-host", "unix:///d.sock"]
