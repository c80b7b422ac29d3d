#!/usr/bin/env bash
# Runs the Python SDK's test suite (python/tests) inside the local Python base
# image: installs the SDK from python/ into a virtualenv that sees the image's
# pydantic, msgpack and pytest, then runs pytest against the installed package
# (console script included). Arguments are passed to pytest.
#
# Usage: scripts/test-python.sh [pytest arguments...]
#
# Environment:
#   OCIAPP_PYTHON_IMAGE  image to test in (default ociapp-local/python:3.13)
#
# Exits with pytest's status; fails when Docker is not available.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${OCIAPP_PYTHON_IMAGE:-ociapp-local/python:3.13}

if ! command -v docker >/dev/null 2>&1; then
	echo "test-python: ERROR: docker is not installed; the Python tests run in a container" >&2
	exit 1
fi
bash "$root/scripts/ensure-base-images.sh" >&2

# The repository is mounted read-only; the SDK is copied out before pip builds
# it, and nothing is written next to the sources (no bytecode, no cache).
tty=()
[ -t 1 ] && tty=(-t)
exec docker run --rm --network none "${tty[@]}" \
	-v "$root:/repo:ro" \
	-e PYTHONDONTWRITEBYTECODE=1 \
	-e PIP_DISABLE_PIP_VERSION_CHECK=1 \
	-e PIP_NO_CACHE_DIR=1 \
	-w /repo/python \
	"$image" bash -c '
		set -euo pipefail
		cp -r /repo/python /tmp/sdk
		rm -rf /tmp/sdk/build /tmp/sdk/src/*.egg-info
		python3 -m venv --system-site-packages /tmp/venv
		/tmp/venv/bin/pip install --quiet --no-index --no-build-isolation /tmp/sdk
		export PATH=/tmp/venv/bin:$PATH
		exec python -m pytest "$@"
	' test-python "$@"
