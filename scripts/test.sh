#!/usr/bin/env bash
# Runs every test: Go (with the race detector), the Python SDK suite and the
# Python host client suite.
# Starts Docker, builds the local base images and brings up the test
# Kubernetes cluster first, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-docker.sh
bash scripts/ensure-base-images.sh
# The test Kubernetes cluster; its env file exports KUBECONFIG,
# OCIAPP_K8S_CONTAINERD, OCIAPP_K8S_NODE and OCIAPP_KUBECTL for the tests.
bash scripts/ensure-kubernetes.sh
# shellcheck source=/dev/null
source /var/lib/ociapp-k8s/env

# Docker is up, so every Docker test must run: tests that need it fail
# rather than skip when CI=true.
export CI=true

echo "== gofmt and go vet"
unformatted=$(git ls-files -z '*.go' | xargs -0 gofmt -l)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 40m ./...

echo "== Python SDK"
bash scripts/test-python.sh

echo "== Python host client"
bash scripts/test-python-client.sh
