"""The ociapp command, run as the installed console script and as
``python -m ociapp``: serving, draining on SIGTERM, load failures, schemas."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from conftest import TESTS

from ociapp.protocol import FrameDecoder, decode_error, decode_response, encode_request, pack_frame

EXIT_LOAD_ERROR = 3


def _console_script() -> list[str]:
    script = shutil.which("ociapp")
    if script is None:
        pytest.fail("the ociapp console script is not on PATH: install the SDK (pip install ./python)")
    return [script]


COMMANDS = {
    "console-script": _console_script,
    "python-m": lambda: [sys.executable, "-m", "ociapp"],
}


@pytest.fixture(params=sorted(COMMANDS))
def ociapp(request: pytest.FixtureRequest) -> list[str]:
    return COMMANDS[request.param]()


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TESTS)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=environment(), timeout=60
    )


class Served:
    def __init__(self, process: subprocess.Popen[str], path: Path) -> None:
        self.process = process
        self.path = path

    def connect(self) -> "SyncClient":
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        sock.connect(str(self.path))
        return SyncClient(sock)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=20)
        return self.process.returncode, stderr


class SyncClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.frames: list[bytes] = []

    def send(self, payload: dict) -> str:
        request_id = str(uuid.uuid4())
        body = encode_request(request_id, msgpack.packb(payload, use_bin_type=True))
        self.sock.sendall(pack_frame(body))
        return request_id

    def receive(self) -> tuple[str, object, object]:
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.frames.extend(self.decoder.feed(data))
        request_id, payload, error = decode_response(self.frames.pop(0))
        return (
            request_id,
            None if payload is None else msgpack.unpackb(payload),
            None if error is None else decode_error(error),
        )

    def at_eof(self) -> bool:
        return self.sock.recv(1) == b""


def serve(command: list[str], directory: Path, *args: str) -> Served:
    path = directory / "app.sock"
    process = subprocess.Popen(
        [*command, "serve", "--socket-path", str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    deadline = time.monotonic() + 20
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"ociapp serve exited with {process.returncode}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the socket never appeared")
        time.sleep(0.005)
    # Readiness is the socket's appearance: it must accept at once.
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(str(path))
    probe.close()
    return Served(process, path)


@pytest.fixture
def served(ociapp: list[str], short_tmp: Path) -> Iterator[Served]:
    server = serve(ociapp, short_tmp, "--app", "apps.sample:sleepy_app")
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.communicate()


def test_serve_round_trip_and_mode(served: Served) -> None:
    assert served.path.stat().st_mode & 0o777 == 0o666
    client = served.connect()
    request_id = client.send({"value": "hi"})
    assert client.receive() == (request_id, {"value": "hi"}, None)
    code, stderr = served.stop()
    assert code == 0
    assert "serving apps.sample:sleepy_app on" in stderr


def test_sigterm_drains_in_flight_requests_and_exits_zero(served: Served) -> None:
    client = served.connect()
    slow = client.send({"value": "slow", "seconds": 0.5})
    quick = client.send({"value": "quick"})
    assert client.receive()[0] == quick  # both requests are in
    served.process.send_signal(signal.SIGTERM)
    # The socket goes away at once, but the in-flight request completes.
    deadline = time.monotonic() + 5
    while served.path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not served.path.exists()
    assert client.receive() == (slow, {"value": "slow"}, None)
    assert client.at_eof()
    _, stderr = served.process.communicate(timeout=10)
    assert served.process.returncode == 0, stderr
    assert "SIGTERM received, draining" in stderr


def test_second_signal_cancels_what_is_left(served: Served) -> None:
    client = served.connect()
    forever = client.send({"value": "forever", "seconds": 60})
    client.send({"value": "quick"})
    client.receive()
    served.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    started = time.monotonic()
    code, stderr = served.stop(signal.SIGINT)
    assert time.monotonic() - started < 5
    assert code == 0, stderr
    assert "cancelling outstanding requests" in stderr
    request_id, payload, error = client.receive()
    assert (request_id, payload) == (forever, None)
    assert error.error_type == "CancelledError"
    assert error.message == "the server stopped before the request finished"
    assert client.at_eof()


def test_idle_server_exits_zero_on_sigint(served: Served) -> None:
    code, _ = served.stop(signal.SIGINT)
    assert code == 0
    assert not served.path.exists()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_loop_flag(ociapp: list[str], short_tmp: Path, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    server = serve(ociapp, short_tmp, "--app", "apps.sample:app", "--loop", loop)
    client = server.connect()
    request_id = client.send({"value": loop})
    assert client.receive() == (request_id, {"value": loop}, None)
    assert server.stop()[0] == 0


def test_without_uvloop(ociapp: list[str], short_tmp: Path) -> None:
    # A uvloop module that fails to import stands in for a missing uvloop.
    (short_tmp / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    env = environment()
    env["PYTHONPATH"] = f"{short_tmp}:{env['PYTHONPATH']}"
    result = subprocess.run(
        [*ociapp, "serve", "--app", "apps.sample:app", "--loop", "uvloop",
         "--socket-path", str(short_tmp / "app.sock")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 2
    assert "uvloop is not installed" in result.stderr

    process = subprocess.Popen(
        [*ociapp, "serve", "--app", "apps.sample:app", "--socket-path", str(short_tmp / "app.sock")],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    served = Served(process, short_tmp / "app.sock")
    deadline = time.monotonic() + 20
    while not served.path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    client = served.connect()
    request_id = client.send({"value": "plain asyncio"})
    assert client.receive() == (request_id, {"value": "plain asyncio"}, None)
    assert served.stop()[0] == 0


def test_max_frame_size_flag(ociapp: list[str], short_tmp: Path) -> None:
    server = serve(ociapp, short_tmp, "--app", "apps.sample:app", "--max-frame-size", "100")
    try:
        client = server.connect()
        client.send({"value": "small"})
        assert client.receive()[1] == {"value": "small"}
        client.send({"value": "x" * 200})
        assert client.at_eof()
    finally:
        server.stop()


def test_sync_application_under_the_cli(ociapp: list[str], short_tmp: Path) -> None:
    server = serve(ociapp, short_tmp, "--app", "apps.sample:blocking_app")
    try:
        client = server.connect()
        slow = client.send({"value": "slow", "seconds": 0.5})
        quick = client.send({"value": "quick"})
        assert client.receive()[0] == quick
        assert client.receive()[0] == slow
    finally:
        assert server.stop()[0] == 0


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("apps.sample", "ociapp: error: application import path must have the form 'pkg.module:attribute'"),
        ("apps.no_such_module:app", "ociapp: error: could not import module 'apps.no_such_module'"),
        ("apps.broken_import:app", "ociapp: error: could not import module 'apps.broken_import'"),
        ("apps.sample:nothing", "ociapp: error: could not find attribute 'nothing' in module 'apps.sample'"),
        ("apps.sample:not_an_app", "ociapp: error: application import path 'apps.sample:not_an_app' must resolve to an Application"),
        ("apps.sample:missing_response_app", "ociapp: error: Application.execute must annotate its response with a pydantic.BaseModel subtype"),
        ("apps.sample:dict_request_app", "ociapp: error: Application.execute must annotate its request with a pydantic.BaseModel subtype"),
    ],
)
@pytest.mark.parametrize("subcommand", ["serve", "schema"])
def test_load_failures(
    ociapp: list[str], short_tmp: Path, subcommand: str, app: str, message: str
) -> None:
    args = ["--socket-path", str(short_tmp / "app.sock")] if subcommand == "serve" else []
    result = run(ociapp, subcommand, "--app", app, *args)
    assert result.returncode == EXIT_LOAD_ERROR
    assert result.stderr.startswith(message), result.stderr
    assert result.stdout == ""
    assert not (short_tmp / "app.sock").exists()


def test_import_failure_shows_the_traceback(ociapp: list[str]) -> None:
    result = run(ociapp, "serve", "--app", "apps.broken_import:app", "--socket-path", "/tmp/unused.sock")
    assert result.returncode == EXIT_LOAD_ERROR
    assert "Traceback (most recent call last)" in result.stderr
    assert "broken_import.py" in result.stderr
    assert "ModuleNotFoundError: No module named 'this_module_does_not_exist'" in result.stderr


def test_usage_errors(ociapp: list[str]) -> None:
    assert run(ociapp).returncode == 2
    assert run(ociapp, "serve").returncode == 2
    assert run(ociapp, "serve", "--app", "apps.sample:app", "--max-frame-size", "0").returncode == 2


def test_unusable_socket_path_is_reported(ociapp: list[str], short_tmp: Path) -> None:
    (short_tmp / "app.sock").mkdir()
    result = run(ociapp, "serve", "--app", "apps.sample:app", "--socket-path", str(short_tmp / "app.sock"))
    assert result.returncode == 4
    assert "ociapp: error: cannot prepare socket path" in result.stderr


def test_schema(ociapp: list[str]) -> None:
    result = run(ociapp, "schema", "--app", "apps.sample:rich_app")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"request", "response", "capabilities"}
    # What ociapp-build records in the artifact: the runtime then sends
    # deadlines and cancels to this app's servers.
    assert document["capabilities"] == ["cancel", "deadline", "stream"]
    assert document["request"]["title"] == "EchoRequest"
    assert document["request"]["required"] == ["value"]
    response = document["response"]
    assert response["title"] == "RichResponse"
    assert response["properties"]["when"] == {"format": "date-time", "title": "When", "type": "string"}
    assert "$defs" in response  # the Color enum


def test_schema_of_the_echo_example(ociapp: list[str]) -> None:
    example = TESTS.parents[1] / "examples" / "echo-app" / "src"
    env = environment()
    env["PYTHONPATH"] = str(example)
    result = subprocess.run(
        [*ociapp, "schema", "--app", "echo_app.main:app", "--indent", "2"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["request"] == {
        "properties": {"value": {"title": "Value", "type": "string"}},
        "required": ["value"],
        "title": "EchoRequest",
        "type": "object",
    }
    assert schema["response"]["title"] == "EchoResponse"
