"""Fixtures of the host client's tests.

They run against a real ociapp-runtime daemon and real containers, as
scripts/test-python-client.sh arranges: OCIAPP_RUNTIME_BINARY names the
ociapp-runtime binary, OCIAPP_TEST_ARTIFACTS a directory holding the test
application's artifacts (testapp-0.1.0.ociapp echoes, sleeps, crashes or
fails as asked; exitstart-0.1.0.ociapp exits at start; capable-0.1.0.ociapp
declares the cancel, deadline and stream capabilities; streamer-0.1.0.ociapp
streams its answers) and the Python
echo-app example (echo-app-0.1.0.ociapp), and the Docker socket is at
/var/run/docker.sock.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from ociapp_runtime._http import Address, Client
from ociapp_runtime._mux import MuxChannel


@pytest.fixture(scope="session")
def artifacts() -> dict[str, Path]:
    root = os.environ.get("OCIAPP_TEST_ARTIFACTS")
    if not root:
        pytest.fail("OCIAPP_TEST_ARTIFACTS is not set; run scripts/test-python-client.sh")
    paths = {
        name: Path(root) / f"{name}-0.1.0.ociapp"
        for name in ("testapp", "exitstart", "echo-app", "capable", "streamer")
    }
    for path in paths.values():
        if not path.is_file():
            pytest.fail(f"missing test artifact {path}")
    return paths


@pytest.fixture(scope="session")
def binary() -> str:
    path = os.environ.get("OCIAPP_RUNTIME_BINARY")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("OCIAPP_RUNTIME_BINARY must name the ociapp-runtime binary")
    return path


@pytest.fixture
def app(artifacts: dict[str, Path]) -> Path:
    return artifacts["testapp"]


async def containers_of(state_dir: Path) -> list[dict]:
    """Lists, through the Docker API, the containers of a daemon's runtime."""

    client = Client(Address(unix_path="/var/run/docker.sock"))
    try:
        filters = json.dumps({"label": [f"dev.ociapp.runtime.state-dir={state_dir / 'rt'}"]})
        resp = await client.request("GET", f"/containers/json?all=1&filters={quote(filters)}")
        assert resp.status == 200, resp.body
        return json.loads(resp.body)
    finally:
        await client.close()


@pytest.fixture
def recording_channel() -> Callable[[], tuple[MuxChannel, list[bytes]]]:
    """Makes an execute channel whose transport records what it writes,
    for tests of the frames it assembles."""

    def make() -> tuple[MuxChannel, list[bytes]]:
        channel = MuxChannel(timeout=10.0)
        written: list[bytes] = []

        class Transport:
            def write(self, data: bytes) -> None:
                written.append(data)

        channel._transport = Transport()  # type: ignore[assignment]
        return channel, written

    return make
