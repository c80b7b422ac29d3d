#!/usr/bin/env bash
# The demo, end to end: starts Docker and builds the local base image if
# needed, builds the two tools, packages the Python and Go echo apps as
# .ociapp artifacts, and runs them in sandboxed containers.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh
bash scripts/ensure-base-images.sh

# step shows a command, quoting arguments the way they would be typed, and runs it.
step() {
	local shown=() a
	for a in "$@"; do
		if [[ $a =~ [[:space:]\{\}\"] ]]; then shown+=("'$a'"); else shown+=("$a"); fi
	done
	printf '\n\033[1m$ %s\033[0m\n' "${shown[*]}"
	"$@"
}

mkdir -p bin dist
step go build -o bin/ ./cmd/ociapp-build ./cmd/ociapp-runtime

# No registry is reachable here, so the Python app builds on the local base
# image; on a machine with a registry, drop --base-image to use python:3.13-slim.
step bin/ociapp-build examples/echo-app --output-dir dist --base-image ociapp-local/python:3.13
step bin/ociapp-build examples/echo-go --output-dir dist

step bin/ociapp-runtime inspect dist/echo-app-0.1.0.ociapp
step bin/ociapp-runtime run dist/echo-app-0.1.0.ociapp '{"value": "hello from Python"}'
step bin/ociapp-runtime run dist/echo-go-0.1.0.ociapp '{"value": "hello from Go"}'

printf '\n\033[1m$ bin/ociapp-runtime run dist/echo-app-0.1.0.ociapp '"'"'{"value": 42}'"'"'\033[0m\n'
set +e
bin/ociapp-runtime run dist/echo-app-0.1.0.ociapp '{"value": 42}'
code=$?
set -e
echo "(exit status $code: the app refused the request, as it should)"
[ "$code" -ne 0 ] || { echo "demo: a mistyped request was accepted" >&2; exit 1; }
printf '\ndemo: done\n'
