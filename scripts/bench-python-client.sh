#!/usr/bin/env bash
# Benchmarks the Python host client against the Go runtime in process, on
# the same artifact (the Python echo-app example) and machine, one after
# the other: the Go runtime's cold start and warm c1/c64 figures
# (ociapp-runtime bench), then the Python client's (clients/python/bench),
# run in the local Python base image as scripts/test-python-client.sh runs
# the tests.
#
# Usage: scripts/bench-python-client.sh [--client-only] [--runtime BIN]
#                                       [--artifact FILE] [REQUESTS]
#
#   REQUESTS         requests at c1; four times as many at c64 (default 5000)
#   --client-only    only the Python client's figures: its JSON on stdout
#                    (scripts/benchmarks.sh compares them with its own runs
#                    of the Go runtime)
#   --runtime BIN    the ociapp-runtime binary the client starts as its
#                    daemon (default: built from this checkout)
#   --artifact FILE  the Python echo's artifact (default: built from
#                    examples/echo-app)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${OCIAPP_PYTHON_IMAGE:-ociapp-local/python:3.13}
requests=5000
client_only=no
runtime_bin=""
app=""
while [ $# -gt 0 ]; do
	case $1 in
	--client-only) client_only=yes ;;
	--runtime | --artifact)
		[ $# -ge 2 ] || { echo "bench-python-client: $1 needs a file" >&2; exit 2; }
		[ -f "$2" ] || { echo "bench-python-client: $1 $2: no such file" >&2; exit 2; }
		if [ "$1" = --runtime ]; then runtime_bin=$(realpath "$2"); else app=$(realpath "$2"); fi
		shift
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	-*)
		echo "bench-python-client: unknown argument '$1' (see --help)" >&2
		exit 2
		;;
	*) requests=$1 ;;
	esac
	shift
done

bash "$root/scripts/ensure-docker.sh" >&2
bash "$root/scripts/ensure-base-images.sh" >&2
work=$(mktemp -d /tmp/ocipyb-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/artifacts" "$work/tmp"
if [ -z "$runtime_bin" ]; then
	runtime_bin=$work/bin/ociapp-runtime
	(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$runtime_bin" ./cmd/ociapp-runtime)
fi
if [ -z "$app" ]; then
	(cd "$root" && go run ./cmd/ociapp-build examples/echo-app --output-dir "$work/artifacts" --base-image "$image" -q)
	app="$work/artifacts/echo-app-0.1.0.ociapp"
fi

if [ "$client_only" = no ]; then
	echo "== Go runtime in process: cold start (image loaded), c1, c64" >&2
	"$runtime_bin" bench "$app" -payload '{"value": "benchmark"}' -n 0 -cold 3 -state-dir "$work/go-cold"
	"$runtime_bin" bench "$app" -payload '{"value": "benchmark"}' -c 1 -n "$requests" -state-dir "$work/go-c1"
	"$runtime_bin" bench "$app" -payload '{"value": "benchmark"}' -c 64 -n $((requests * 4)) -state-dir "$work/go-c64"
fi

echo "== Python client -> daemon -> app" >&2
# The daemon the client starts runs in this container and opens the
# artifact by path, so the artifact and the binary are mounted where they
# lie on the host; so is the scratch directory, where the daemon keeps its
# state and the sockets the application's containers share with it.
mounts=(-v "$work:$work")
for f in "$runtime_bin" "$app"; do
	case $f in "$work"/*) ;; *) mounts+=(-v "$f:$f:ro") ;; esac
done
docker run --rm --init --network none \
	-v /var/run/docker.sock:/var/run/docker.sock \
	"${mounts[@]}" \
	-v "$root/clients/python:/src:ro" \
	-e TMPDIR="$work/tmp" \
	-e XDG_STATE_HOME="$work/state" \
	-e OCIAPP_RUNTIME_BINARY="$runtime_bin" \
	-e PYTHONDONTWRITEBYTECODE=1 -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_NO_CACHE_DIR=1 \
	"$image" bash -c '
		set -euo pipefail
		cp -r /src /tmp/client
		rm -rf /tmp/client/build /tmp/client/src/*.egg-info
		python3 -m venv --system-site-packages /tmp/venv
		/tmp/venv/bin/pip install --quiet --no-index --no-build-isolation /tmp/client
		exec /tmp/venv/bin/python /tmp/client/bench/bench_runtime.py "$@"
	' bench "$app" "$requests"
