#!/usr/bin/env bash
# Runs the Python host client's test suite (clients/python/tests) inside the
# local Python base image, against a real ociapp-runtime daemon and real
# containers: builds a static ociapp-runtime, the test application's
# artifacts and the echo-app example on the host, installs the client from clients/python into a
# virtualenv that sees the image's msgpack and pytest, and runs pytest with
# the Docker socket mounted. Arguments are passed to pytest.
#
# The daemon runs inside the test container but its app containers are
# started by the host's Docker, which bind-mounts their socket directories
# by path: the work directory is therefore mounted at the same path inside
# as outside, and TMPDIR and XDG_STATE_HOME (where a default Runtime keeps
# its daemon's state) point into it.
#
# Usage: scripts/test-python-client.sh [pytest arguments...]
#
# Environment:
#   OCIAPP_PYTHON_IMAGE  image to test in (default ociapp-local/python:3.13)
#
# Exits with pytest's status; fails when Docker is not available.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${OCIAPP_PYTHON_IMAGE:-ociapp-local/python:3.13}

die() {
	echo "test-python-client: ERROR: $*" >&2
	exit 1
}

command -v docker >/dev/null 2>&1 || die "docker is not installed; these tests run real containers"
docker info >/dev/null 2>&1 || die "Docker is not running; start it with scripts/ensure-docker.sh"
command -v go >/dev/null 2>&1 || die "go is not installed; it builds ociapp-runtime and the test artifacts"

docker_sock=/var/run/docker.sock
case "${DOCKER_HOST:-}" in
unix://*) docker_sock=${DOCKER_HOST#unix://} ;;
"") ;;
*) die "DOCKER_HOST=$DOCKER_HOST is not a Unix socket; the tests mount the Docker socket into their container" ;;
esac

bash "$root/scripts/ensure-base-images.sh" >&2

# Short: the daemon's socket paths live under it and must fit 108 bytes.
work=$(mktemp -d /tmp/ocipy-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/artifacts" "$work/tmp"

echo "test-python-client: building ociapp-runtime and the test artifacts" >&2
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$work/bin/ociapp-runtime" ./cmd/ociapp-runtime)
(cd "$root" && go run ./internal/testapps/mktestapp "$work/artifacts" >/dev/null)
# The original's example app, for the demo: built on the local base image,
# since no registry is reachable.
(cd "$root" && go run ./cmd/ociapp-build examples/echo-app --output-dir "$work/artifacts" --base-image "$image" -q)

tty=()
[ -t 1 ] && tty=(-t)
# No network: the daemon reaches Docker through the socket, and the TCP
# tests use the container's loopback. --init reaps a daemon whose parent
# the tests kill on purpose.
docker run --rm --init --network none "${tty[@]}" \
	-v "$docker_sock:/var/run/docker.sock" \
	-v "$work:$work" \
	-v "$root/clients/python:/src:ro" \
	-e TMPDIR="$work/tmp" \
	-e XDG_STATE_HOME="$work/state" \
	-e OCIAPP_RUNTIME_BINARY="$work/bin/ociapp-runtime" \
	-e OCIAPP_TEST_ARTIFACTS="$work/artifacts" \
	-e PYTHONDONTWRITEBYTECODE=1 \
	-e PIP_DISABLE_PIP_VERSION_CHECK=1 \
	-e PIP_NO_CACHE_DIR=1 \
	"$image" bash -c '
		set -euo pipefail
		cp -r /src /tmp/client
		rm -rf /tmp/client/build /tmp/client/src/*.egg-info
		python3 -m venv --system-site-packages /tmp/venv
		/tmp/venv/bin/pip install --quiet --no-index --no-build-isolation /tmp/client
		cd /tmp/client
		exec /tmp/venv/bin/python -m pytest "$@"
	' test-python-client "$@"
