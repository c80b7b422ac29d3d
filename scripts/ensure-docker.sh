#!/usr/bin/env bash
# Makes sure a Docker daemon answers on this machine: installs Debian's
# docker.io when dockerd is missing, starts dockerd detached when it is not
# running, and waits until `docker info` succeeds. Safe to rerun; a no-op when
# the daemon already answers. See docs/environment.md.
#
# Environment:
#   OCIAPP_DOCKERD_LOG      dockerd log file      (default /var/log/ociapp-dockerd.log)
#   OCIAPP_DOCKERD_TIMEOUT  seconds to wait       (default 60)
#   OCIAPP_DOCKERD_ARGS     extra dockerd flags, e.g. "--iptables=false"
set -euo pipefail

log_file=${OCIAPP_DOCKERD_LOG:-/var/log/ociapp-dockerd.log}
apt_log=/var/log/ociapp-apt.log
[ "$(id -u)" -eq 0 ] || apt_log=${XDG_CACHE_HOME:-$HOME/.cache}/ociapp-apt.log
timeout=${OCIAPP_DOCKERD_TIMEOUT:-60}
pid_file=/var/run/docker.pid
sock_file=/var/run/docker.sock
containerd_pid_file=/var/run/docker/containerd/containerd.pid

say() { printf 'ensure-docker: %s\n' "$*"; }
die() {
	printf 'ensure-docker: ERROR: %s\n' "$1" >&2
	shift
	for line in "$@"; do printf '%s\n' "$line" | sed 's/^/  /' >&2; done
	exit 1
}

# Root is needed to install packages and to start dockerd; use sudo when
# available rather than failing outright.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -n "$@" || die "'$*' needs root and sudo refused" \
			"rerun this script as root, or configure passwordless sudo"
	else
		die "'$*' needs root" "rerun this script as root"
	fi
}

docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# is_live PID NAME: true when PID is a live (not zombie) process named NAME.
is_live() {
	local stat
	[ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
	# A killed daemon lingers as a zombie until reaped; it will never answer.
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ] && [ "${stat%% *}" != X ]
}

running_dockerd() {
	local pid=""
	[ -r "$pid_file" ] && pid=$(tr -dc 0-9 <"$pid_file")
	if is_live "$pid" dockerd; then echo "$pid"; return; fi
	# /proc scan rather than pgrep: procps is not installed everywhere.
	local comm
	for comm in /proc/[0-9]*/comm; do
		pid=${comm#/proc/}
		pid=${pid%/comm}
		is_live "$pid" dockerd || continue
		echo "$pid"
		return
	done
}

log_tail() {
	if [ -r "$log_file" ]; then
		# Only this start attempt, without the gRPC connection chatter.
		echo "last lines of $log_file:"
		awk '/^=== .*ensure-docker.sh starting/ { n = 0 } { buf[n++] = $0 }
			END { for (i = 0; i < n; i++) print buf[i] }' "$log_file" |
			grep -v 'module=grpc' | tail -n 15 | sed 's/^/    /'
	fi
}

# On a cgroup v1 host, containerd's shim cannot load a container's cgroup
# when a hierarchy named in /proc/self/cgroup is not mounted, and then Docker
# never reports OOM kills (see docs/engine.md). Mount any that are missing.
mount_cgroup_v1() {
	[ "$(id -u)" -eq 0 ] && [ ! -f /sys/fs/cgroup/cgroup.controllers ] || return 0
	local s
	for s in net_cls net_prio perf_event hugetlb; do
		if grep -q ":$s:" /proc/self/cgroup && ! mountpoint -q "/sys/fs/cgroup/$s"; then
			mkdir -p "/sys/fs/cgroup/$s" && mount -t cgroup -o "$s" cgroup "/sys/fs/cgroup/$s" &&
				say "mounted the $s cgroup hierarchy"
		fi
	done
}
mount_cgroup_v1

if docker_ok; then
	say "daemon running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)), nothing to do"
	exit 0
fi

# Only the local default daemon is ours to start.
case ${DOCKER_HOST:-unix://$sock_file} in
"unix://$sock_file" | unix:///run/docker.sock) ;;
*)
	die "docker info fails for DOCKER_HOST=$DOCKER_HOST and this script only starts the local daemon" \
		"start the daemon DOCKER_HOST names, or unset DOCKER_HOST to use a local one"
	;;
esac

# A daemon that runs but refuses us is a permissions problem, not a reason to
# start a second one.
info_err=""
command -v docker >/dev/null 2>&1 && info_err=$(docker info 2>&1 >/dev/null || true)
if [[ $info_err == *"permission denied"* ]]; then
	die "dockerd is running but $(id -un) may not use $sock_file" \
		"add the user to the docker group (usermod -aG docker $(id -un)) and log in again, or run as root"
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
	say "installing docker.io with apt (log: $apt_log)"
	mkdir -p "$(dirname "$apt_log")"
	if ! { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io; } \
		>>"$apt_log" 2>&1; then
		die "installing docker.io failed" "see $apt_log; check that an apt mirror is reachable (apt-get update)" \
			"$(tail -n 10 "$apt_log" 2>/dev/null)"
	fi
	hash -r
fi

start_dockerd() {
	# Leftovers from a daemon that died: a pid file naming a dead (or reused)
	# pid makes dockerd refuse to start, and a stale socket misleads clients.
	[ -e "$pid_file" ] && as_root rm -f "$pid_file"
	[ -e "$sock_file" ] && as_root rm -f "$sock_file"
	# dockerd reuses the containerd it supervised before when that pid is
	# still "alive", which includes a zombie left by a killed daemon; it then
	# waits for a socket nobody serves and gives up.
	local cpid=""
	[ -r "$containerd_pid_file" ] && cpid=$(tr -dc 0-9 <"$containerd_pid_file")
	if [ -n "$cpid" ] && ! is_live "$cpid" containerd; then
		as_root rm -f "$containerd_pid_file"
	fi
	say "starting dockerd (log: $log_file)"
	# setsid -f: own session, so the daemon outlives this script and its
	# terminal; stdin from /dev/null so CI runners without stdin are fine.
	# shellcheck disable=SC2016,SC2086 # expanded by the inner sh; ARGS is a list of flags.
	as_root sh -c 'log=$1; shift
		echo "=== $(date -u +%FT%TZ) ensure-docker.sh starting: $*" >>"$log"
		setsid -f nohup "$@" </dev/null >>"$log" 2>&1' sh "$log_file" dockerd ${OCIAPP_DOCKERD_ARGS:-}
}

fail_start() {
	local hint=""
	pid=$(running_dockerd)
	[ "$started" = no ] && [ -n "$pid" ] &&
		hint="a dockerd not started by this script (pid $pid) does not answer on $sock_file; stop it (kill $pid) and rerun"
	die "$1" \
		"$(log_tail)" \
		${hint:+"$hint"} \
		"fix the cause shown above, then rerun; common fixes are in docs/environment.md" \
		"(e.g. OCIAPP_DOCKERD_ARGS=--iptables=false when iptables is unavailable)"
}

started=no
pid=$(running_dockerd)
if [ -n "$pid" ]; then
	# Probably still starting (or shutting down); give it the same time budget
	# and start our own if it goes away.
	say "dockerd already running (pid $pid), waiting for it to answer"
else
	start_dockerd
	started=yes
fi

deadline=$((SECONDS + timeout))
until docker_ok; do
	if [ "$SECONDS" -ge "$deadline" ]; then
		fail_start "dockerd did not answer within ${timeout}s"
	fi
	sleep 0.5
	if [ -z "$(running_dockerd)" ]; then
		[ "$started" = yes ] && ! docker_ok && fail_start "dockerd exited while starting"
		start_dockerd
		started=yes
	fi
done
say "daemon ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown))"
