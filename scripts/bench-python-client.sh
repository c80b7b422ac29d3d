#!/usr/bin/env bash
# Benchmarks the Python host client against the Go runtime in process, on
# the same artifact (the Python echo-app example) and machine, one after
# the other: the Go runtime's cold start and warm c1/c64 figures
# (ociapp-runtime bench), then the Python client's (clients/python/bench),
# run in the local Python base image as scripts/test-python-client.sh runs
# the tests.
#
# Usage: scripts/bench-python-client.sh [REQUESTS]   (default 5000)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${OCIAPP_PYTHON_IMAGE:-ociapp-local/python:3.13}
requests=${1:-5000}

bash "$root/scripts/ensure-docker.sh" >&2
bash "$root/scripts/ensure-base-images.sh" >&2
work=$(mktemp -d /tmp/ocipyb-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/artifacts" "$work/tmp"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$work/bin/ociapp-runtime" ./cmd/ociapp-runtime)
(cd "$root" && go run ./cmd/ociapp-build examples/echo-app --output-dir "$work/artifacts" --base-image "$image" -q)
app="$work/artifacts/echo-app-0.1.0.ociapp"

echo "== Go runtime in process: cold start (image loaded), c1, c64" >&2
"$work/bin/ociapp-runtime" bench "$app" -payload '{"value": "benchmark"}' -n 0 -cold 3 -state-dir "$work/go-cold"
"$work/bin/ociapp-runtime" bench "$app" -payload '{"value": "benchmark"}' -c 1 -n "$requests" -state-dir "$work/go-c1"
"$work/bin/ociapp-runtime" bench "$app" -payload '{"value": "benchmark"}' -c 64 -n $((requests * 4)) -state-dir "$work/go-c64"

echo "== Python client -> daemon -> app" >&2
docker run --rm --init --network none \
	-v /var/run/docker.sock:/var/run/docker.sock \
	-v "$work:$work" \
	-v "$root/clients/python:/src:ro" \
	-e TMPDIR="$work/tmp" \
	-e XDG_STATE_HOME="$work/state" \
	-e OCIAPP_RUNTIME_BINARY="$work/bin/ociapp-runtime" \
	-e PYTHONDONTWRITEBYTECODE=1 -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_NO_CACHE_DIR=1 \
	"$image" bash -c '
		set -euo pipefail
		cp -r /src /tmp/client
		rm -rf /tmp/client/build /tmp/client/src/*.egg-info
		python3 -m venv --system-site-packages /tmp/venv
		/tmp/venv/bin/pip install --quiet --no-index --no-build-isolation /tmp/client
		exec /tmp/venv/bin/python /tmp/client/bench/bench_runtime.py "$@"
	' bench "$app" "$requests"
