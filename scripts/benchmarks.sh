#!/usr/bin/env bash
# Measures OCIApp and regenerates docs/benchmarks.md and
# docs/img/latency-vs-concurrency.svg from the results. Run it by hand on a
# quiet machine (it is not part of CI); a full run takes about 13 minutes
# on 2 CPUs. See docs/benchmarks.md (Method).
#
# Usage: scripts/benchmarks.sh [--quick] [--keep] [--output DIR]
#
#   --quick       short runs, to check that everything works; the figures
#                 are not worth publishing, so the report goes to
#                 $TMPDIR/ociapp-bench-quick unless --output says otherwise
#   --keep        keep the scratch directory with the raw results
#   --output DIR  write DIR/benchmarks.md and DIR/img/ (default: docs)
#
# It needs Docker and the local base image (started and built through
# scripts/ensure-docker.sh and scripts/ensure-base-images.sh), Go, and the
# Debian mirror (the cold Python build installs system packages).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

quick=no
keep=no
output=""
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=yes ;;
	--keep) keep=yes ;;
	--output)
		[ $# -ge 2 ] || { echo "benchmarks: --output needs a directory" >&2; exit 2; }
		output=$2
		shift
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "benchmarks: unknown argument '$1' (see --help)" >&2
		exit 2
		;;
	esac
	shift
done

# The measurement plan. Warm runs go through the repetitions in the outer
# loop, so that drift in the machine's load spreads over every point.
base_image=ociapp-local/python:3.13
payload='{"value": "hello"}'
concurrencies="1 2 4 8 16 32 64"
warm_duration=5s
warmup=2000
reps=3
cold=10
load_reps=3
gobench_time=2s
gobench_count=3
cpubound_n=400x
pyclient_requests=5000
if [ "$quick" = yes ]; then
	output=${output:-${TMPDIR:-/tmp}/ociapp-bench-quick}
	concurrencies="1 8 64"
	warm_duration=500ms
	reps=1
	cold=2
	load_reps=1
	gobench_time=200ms
	gobench_count=1
	cpubound_n=40x
	pyclient_requests=500
fi
output=${output:-docs}

say() { printf '== %s\n' "$*"; }
die() {
	printf 'benchmarks: ERROR: %s\n' "$*" >&2
	exit 1
}

start_seconds=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/ociapp-bench.XXXXXX")
results=$work/results
cold_base=""
busy=()
# stop_busy stops the busy loops start_busy started.
stop_busy() {
	if [ ${#busy[@]} -gt 0 ]; then
		kill "${busy[@]}" 2>/dev/null || true
		wait "${busy[@]}" 2>/dev/null || true
	fi
	busy=()
}
# start_busy starts one busy loop per CPU in the background.
start_busy() {
	local i
	for i in $(seq 1 "$(nproc)"); do
		(while :; do :; done) &
		busy+=($!)
	done
}
cleanup() {
	stop_busy
	if [ -n "$cold_base" ]; then
		docker image rm -f "$cold_base" >/dev/null 2>&1 || true
	fi
	if [ "$keep" = yes ]; then
		echo "raw results kept in $results"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
mkdir -p "$results/warm" "$results/cold" "$results/load" "$work/bin" "$work/dist"

bash scripts/ensure-docker.sh
bash scripts/ensure-base-images.sh

say "building the tools"
go build -o "$work/bin/" ./cmd/ociapp-build ./cmd/ociapp-runtime ./internal/benchreport
export PATH="$work/bin:$PATH"
benchreport facts >"$results/machine.json"

# quote ARGS...: the command line as one would type it.
quote() {
	local out="" a
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
			out+="$a "
		else
			out+="'${a//\'/\'\\\'\'}' "
		fi
	done
	printf '%s' "${out% }"
}

# record_text KEY TEXT: note TEXT as the command measured under KEY, unless
# KEY has one already; the scratch directory shows as $TMP.
record_text() {
	local key=$1 line=$2
	grep -q "^$key	" "$results/commands.tsv" 2>/dev/null && return
	line=${line//$work\/bin\//}
	line=${line//$work/\$TMP}
	line=${line//$repo\//}
	printf '%s\t%s\n' "$key" "$line" >>"$results/commands.tsv"
}

# record KEY ARGS...: record_text with the command line ARGS.
record() {
	local key=$1
	shift
	record_text "$key" "$(quote "$@")"
}

# measure KEY OUT ARGS...: record and run a command, its stdout to OUT.
measure() {
	local key=$1 out=$2
	shift 2
	record "$key" "$@"
	"$@" >"$out" || {
		tail -n 40 "$out" >&2
		die "$(quote "$@") failed"
	}
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# timed_build KEY [ENV=VALUE...] -- ARGS...: time one ociapp-build run.
timed_build() {
	local key=$1 t0 t1
	shift
	local envs=()
	while [ "$1" != -- ]; do
		envs+=("$1")
		shift
	done
	shift
	record "$key" "${envs[@]}" "$@"
	t0=$(now)
	env "${envs[@]}" "$@" || die "build $key failed: $(quote "$@")"
	t1=$(now)
	printf '%s\t%s\n' "$key" "$(elapsed "$t0" "$t1")" >>"$results/builds.tsv"
	say "$key: $(elapsed "$t0" "$t1") s"
}

{
	printf 'concurrencies\t%s\n' "${concurrencies// /, }"
	printf 'warm_duration\t%s\n' "$warm_duration"
	printf 'warmup\t%s\n' "$warmup"
	printf 'reps\t%s\n' "$reps"
	printf 'cold\t%s\n' "$cold"
	printf 'load_reps\t%s\n' "$load_reps"
	printf 'gobench_count\t%s\n' "$gobench_count"
} >"$results/settings.tsv"

say "building the Go echo (cold: empty Go build cache)"
timed_build build.go.cold GOCACHE="$work/gocache-cold" -- \
	ociapp-build examples/echo-go --output-dir "$work/dist/go-cold" -q
go_artifact=$work/dist/go/echo-go-0.1.0.ociapp
ociapp-build examples/echo-go --output-dir "$work/dist/go" -q

say "building the Go echo (code-only change)"
# A copy of the example as its own module, depending on this checkout of
# the SDK, as a user's project would.
go_copy=$work/src/echo-go
mkdir -p "$go_copy"
cp examples/echo-go/main.go examples/echo-go/ociapp.toml "$go_copy/"
cat >"$go_copy/go.mod" <<EOF
module example.com/echo-go

go 1.26.0

require github.com/ociapp/ociapp v0.0.0

replace github.com/ociapp/ociapp => $repo
EOF
cp go.sum "$go_copy/"
(cd "$go_copy" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1) || die "preparing the Go copy ($go_copy) failed"
ociapp-build "$go_copy" --output-dir "$work/dist/go-copy" -q || die "building $go_copy failed"
printf '\n// buildStamp makes this build differ from the previous one.\nvar buildStamp = "%s"\n' "$(date +%s%N)" >>"$go_copy/main.go"
timed_build build.go.code -- ociapp-build "$go_copy" --output-dir "$work/dist/go-copy" -q

say "building the Python echo (cold: a base image no build has used)"
# A label makes a new image ID, so no cached step of an earlier build
# matches: every step runs, apt-get included. The base image itself stays.
cold_base=ociapp-bench/python-cold:$(date +%s%N)
printf 'FROM %s\nLABEL dev.ociapp.bench-cold=%s\n' "$base_image" "$cold_base" |
	docker build -q -t "$cold_base" - >"$work/cold-base.log" 2>&1 || {
	cat "$work/cold-base.log" >&2
	die "making a cold base image from $base_image failed"
}
record_text build.python.cold "printf 'FROM $base_image\\nLABEL dev.ociapp.bench-cold=STAMP\\n' | docker build -t ociapp-bench/python-cold -; $(quote ociapp-build examples/echo-app --output-dir "$work/dist/python-cold" --base-image ociapp-bench/python-cold -q)"
timed_build build.python.cold -- \
	ociapp-build examples/echo-app --output-dir "$work/dist/python-cold" --base-image "$cold_base" -q
docker image rm -f "$cold_base" >/dev/null 2>&1 || true
cold_base=""
py_artifact=$work/dist/python/echo-app-0.1.0.ociapp
ociapp-build examples/echo-app --output-dir "$work/dist/python" --base-image "$base_image" -q ||
	die "building examples/echo-app failed"

say "building the Python echo (code-only change)"
py_copy=$work/src/echo-app
mkdir -p "$py_copy"
cp -r examples/echo-app/. "$py_copy/"
printf '\nBUILD_STAMP = "%s"\n' "$(date +%s%N)" >>"$py_copy/src/echo_app/main.py"
timed_build build.python.code -- \
	ociapp-build "$py_copy" --output-dir "$work/dist/python-copy" --base-image "$base_image" -q

# json_field FILE KEY: a string field of bench's indented JSON.
json_field() { sed -n "s/^ *\"$2\": \"\([^\"]*\)\".*/\1/p" "$1" | head -n 1; }

say "artifact loads"
for app in go python; do
	artifact=$go_artifact
	[ "$app" = python ] && artifact=$py_artifact
	for rep in $(seq 1 "$load_reps"); do
		probe=$results/load/$app-present-$rep.json
		measure "load.$app.present" "$probe" ociapp-runtime bench "$artifact" -n 0 --json
		for id in "$(json_field "$probe" config_digest)" "$(json_field "$probe" digest)"; do
			docker image rm -f "$id" >/dev/null 2>&1 || true
		done
		record_text "load.$app.first" "docker image rm -f IMAGE_ID; $(quote ociapp-runtime bench "$artifact" -n 0 --json)"
		measure "load.$app.first" "$results/load/$app-first-$rep.json" ociapp-runtime bench "$artifact" -n 0 --json
	done
done

say "Go benchmarks"
# has_bench DIR NAME: DIR's tests define BenchmarkNAME (any benchmark for
# an empty NAME). Decided from the source, so that a package that does not
# compile fails the run instead of quietly dropping its rows.
has_bench() { grep -qs "^func Benchmark$2" "$1"/*_test.go; }
measure gobench.protocol "$results/gobench-protocol.txt" \
	go test -run '^$' -bench 'RoundTrip|RawPingPong' -benchtime "$gobench_time" -count "$gobench_count" .
if has_bench python PythonEcho; then
	measure gobench.python "$results/gobench-python.txt" \
		go test -run '^$' -bench 'PythonEcho' -benchtime "$gobench_time" -count "$gobench_count" ./python/
fi
if has_bench runtime ExecuteOverhead; then
	measure gobench.runtime "$results/gobench-runtime.txt" \
		go test -run '^$' -bench 'ExecuteOverhead' -benchtime "$gobench_time" -count "$gobench_count" ./runtime/
fi
if has_bench runtime CPUBound; then
	measure gobench.cpubound "$results/gobench-cpubound.txt" \
		go test -run '^$' -bench 'CPUBound' -benchtime "$cpubound_n" -count 1 ./runtime/
fi
# A remote runtime (daemon and client), when it has benchmarks.
remote_pkgs=()
for pkg in remote daemon; do
	if has_bench "$pkg" ''; then
		remote_pkgs+=("./$pkg/")
	fi
done
if [ ${#remote_pkgs[@]} -gt 0 ]; then
	measure gobench.remote "$results/gobench-remote.txt" \
		go test -run '^$' -bench . -benchtime "$gobench_time" -count "$gobench_count" "${remote_pkgs[@]}"
fi

say "warm Execute at concurrency ${concurrencies// /, } ($reps × $warm_duration each)"
for rep in $(seq 1 "$reps"); do
	for app in go python; do
		artifact=$go_artifact
		[ "$app" = python ] && artifact=$py_artifact
		for c in $concurrencies; do
			measure "warm.$app.c$c" "$results/warm/$app-c$c-$rep.json" \
				ociapp-runtime bench "$artifact" --payload "$payload" -c "$c" -d "$warm_duration" --warmup "$warmup" --json
		done
		# The same at c1 with busy polling off, to show what it buys.
		measure "warm.$app-nopoll.c1" "$results/warm/$app-nopoll-c1-$rep.json" \
			ociapp-runtime bench "$artifact" --payload "$payload" -c 1 -d "$warm_duration" --warmup "$warmup" --busy-poll 0 --json
	done
	# Under load: one busy process per CPU, with and without busy polling.
	start_busy
	for app in go python; do
		artifact=$go_artifact
		[ "$app" = python ] && artifact=$py_artifact
		for c in 1 64; do
			record_text "warm.$app-load.c$c" "for i in \$(seq \$(nproc)); do (while :; do :; done) & done; $(quote ociapp-runtime bench "$artifact" --payload "$payload" -c "$c" -d "$warm_duration" --warmup "$warmup" --json)"
			measure "warm.$app-load.c$c" "$results/warm/$app-load-c$c-$rep.json" \
				ociapp-runtime bench "$artifact" --payload "$payload" -c "$c" -d "$warm_duration" --warmup "$warmup" --json
			record_text "warm.$app-load-nopoll.c$c" "for i in \$(seq \$(nproc)); do (while :; do :; done) & done; $(quote ociapp-runtime bench "$artifact" --payload "$payload" -c "$c" -d "$warm_duration" --warmup "$warmup" --busy-poll 0 --json)"
			measure "warm.$app-load-nopoll.c$c" "$results/warm/$app-load-nopoll-c$c-$rep.json" \
				ociapp-runtime bench "$artifact" --payload "$payload" -c "$c" -d "$warm_duration" --warmup "$warmup" --busy-poll 0 --json
		done
	done
	stop_busy
	say "repetition $rep of $reps done"
done

say "cold starts ($cold each)"
for app in go python; do
	artifact=$go_artifact
	[ "$app" = python ] && artifact=$py_artifact
	measure "cold.$app" "$results/cold/$app.json" \
		ociapp-runtime bench "$artifact" --payload "$payload" -n 0 --cold "$cold" --json
done

say "the Python client through a daemon"
# Its own figures only: the report sets them beside this run's Warm
# Execute and cold starts of the same artifact.
measure pyclient "$results/pyclient.json" \
	bash scripts/bench-python-client.sh --client-only --runtime "$work/bin/ociapp-runtime" --artifact "$py_artifact" "$pyclient_requests"

printf 'run_minutes\t%d\n' $(((SECONDS - start_seconds + 30) / 60)) >>"$results/settings.tsv"
printf 'load_end\t%s\n' "$(cut -d ' ' -f 1-3 /proc/loadavg)" >>"$results/settings.tsv"
say "writing $output/benchmarks.md and $output/img/latency-vs-concurrency.svg"
benchreport render -results "$results" -md "$output/benchmarks.md" -svg "$output/img/latency-vs-concurrency.svg"
say "done in $((SECONDS - start_seconds)) s"
