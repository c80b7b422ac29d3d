#!/usr/bin/env bash
# Makes sure a real single-node Kubernetes v1.34 cluster runs on this machine,
# from the Go module proxy and Debian's packages only: kube-apiserver, kubelet
# and kubectl built from k8s.io/kubernetes (wrapper module in
# scripts/kubernetes), etcd, containerd (a second one, with CRI, separate from
# Docker's) and the CNI plugins from Debian, and a pause image built locally.
# Reuses built binaries and healthy components; restarts only broken ones.
# See docs/environment.md.
#
# Usage: scripts/ensure-kubernetes.sh [up|stop|status|smoke|build]
#   up      (default) bring the cluster up, or check that it is up
#   build   only build the binaries into the cache
#   stop    stop every component, remove the pods' containers, restore sysctls
#   status  report each component; exit 1 unless all are healthy
#   smoke   up, then run a pod from the host and talk to its Unix socket
#
# Fixed locations (the Kubernetes engine and its tests rely on them):
#   /var/lib/ociapp-k8s/env               export lines: KUBECONFIG, OCIAPP_K8S_CONTAINERD,
#                                         OCIAPP_K8S_NODE, OCIAPP_KUBECTL, PATH
#   /var/lib/ociapp-k8s/admin.kubeconfig  cluster-admin kubeconfig
#   /run/ociapp-k8s/containerd.sock       the cluster's containerd (images in namespace k8s.io)
#   node name                             `hostname` (lower case), resolving to 127.0.0.1
#   /var/log/ociapp-k8s/                  logs
#
# Environment:
#   OCIAPP_K8S_CACHE    built binaries and Go build cache (default /var/cache/ociapp-kubernetes)
#   OCIAPP_K8S_TIMEOUT  seconds to wait for each component (default 120)
#   OCIAPP_K8S_NICE     niceness of the Kubernetes build (default 10)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wrapper=$here/kubernetes
version=v1.34.4
cache=${OCIAPP_K8S_CACHE:-/var/cache/ociapp-kubernetes}
timeout=${OCIAPP_K8S_TIMEOUT:-120}
build_nice=${OCIAPP_K8S_NICE:-10}

state=/var/lib/ociapp-k8s
run=/run/ociapp-k8s
logs=/var/log/ociapp-k8s
pki=$state/pki
sock=$run/containerd.sock
admin_kubeconfig=$state/admin.kubeconfig
env_file=$state/env
lock_file=/run/lock/ociapp-k8s.lock

etcd_url=http://127.0.0.1:2479
etcd_peer_url=http://127.0.0.1:2480
api_port=6443
api_url=https://127.0.0.1:$api_port
kubelet_port=10250
kubelet_healthz_port=10248
pod_cidr=10.222.0.0/24
service_cidr=10.223.0.0/24
bridge=ociapp-k8s0
pause_image=localhost/ociapp-k8s-pause:1
smoke_image=ociapp.local/k8s-smoke:1
# Debian package -> a file it installs.
packages="etcd-server:/usr/bin/etcd containerd:/usr/bin/containerd runc:/usr/sbin/runc
containernetworking-plugins:/usr/lib/cni/bridge openssl:/usr/bin/openssl curl:/usr/bin/curl
iproute2:/usr/sbin/ip util-linux:/usr/bin/flock procps:/usr/sbin/sysctl"
# The kubelet sets these at start; stop restores what they were before.
kubelet_sysctls="vm.overcommit_memory kernel.panic kernel.panic_on_oops"

say() { printf 'ensure-kubernetes: %s\n' "$*"; }
die() {
	printf 'ensure-kubernetes: ERROR: %s\n' "$1" >&2
	shift
	for line in "$@"; do printf '%s\n' "$line" | sed 's/^/  /' >&2; done
	exit 1
}
now() { echo "${EPOCHREALTIME/./}"; }
# since T0: seconds elapsed since the microsecond timestamp T0.
since() { local d=$(($(now) - $1)); printf '%d.%d s' $((d / 1000000)) $((d % 1000000 / 100000)); }

node=$(hostname | tr '[:upper:]' '[:lower:]')

# ---------------------------------------------------------------- processes

# is_live PID NAME: true when PID is a live (not zombie) process named NAME.
is_live() {
	local stat
	[ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ] && [ "${stat%% *}" != X ]
}

# pid_of NAME: the recorded pid of component NAME when that process lives.
pid_of() {
	local pid=""
	[ -r "$run/$1.pid" ] && pid=$(tr -dc 0-9 <"$run/$1.pid")
	is_live "$pid" "$1" && echo "$pid"
}

# log_tail NAME: the end of NAME's log since its last start.
log_tail() {
	local log=$logs/$1.log
	[ -r "$log" ] || return 0
	echo "last lines of $log:"
	awk '/^=== .* ensure-kubernetes.sh starting/ { n = 0 } { buf[n++] = $0 }
		END { for (i = 0; i < n; i++) print buf[i] }' "$log" | tail -n 20 | cut -c1-300 | sed 's/^/    /'
}

# start NAME SPEC CMD...: starts CMD detached, logging to NAME.log; SPEC
# (the command line plus a hash of its configuration) is recorded so that a
# later run restarts the component when it changes.
start() {
	local name=$1 spec=$2 log=$logs/$1.log
	shift 2
	if [ -f "$log" ] && [ "$(stat -c %s "$log")" -gt $((64 << 20)) ]; then
		mv -f "$log" "$log.1"
	fi
	echo "=== $(date -u +%FT%TZ) ensure-kubernetes.sh starting: $*" >>"$log"
	rm -f "$run/$name.pid"
	# setsid -f: own session, so the component outlives this script and its
	# terminal; 9>&- keeps the script's lock out of the daemon. The shell
	# records its pid, then becomes the component.
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid -f bash -c 'echo $$ >"$1"; shift; exec "$@"' bash "$run/$name.pid" "$@" </dev/null >>"$log" 2>&1 8>&- 9>&-
	printf '%s\n' "$spec" >"$run/$name.spec"
	# Wait for the exec, so that pid_of finds the component by its name.
	local i pid
	for ((i = 0; i < 250; i++)); do
		pid=$(cat "$run/$name.pid" 2>/dev/null) || true
		[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != bash ] && break
		sleep 0.02
	done
}

# stop_process NAME [SECONDS]: SIGTERM, then SIGKILL after SECONDS (default 10).
stop_process() {
	local name=$1 wait=${2:-10} pid i t0
	t0=$(now)
	pid=$(pid_of "$name") || true
	rm -f "$run/$name.pid" "$run/$name.spec"
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < wait * 10; i++)); do
		is_live "$pid" "$name" || { say "stopped $name (pid $pid) in $(since "$t0")"; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		is_live "$pid" "$name" || break
		sleep 0.1
	done
	say "killed $name (pid $pid) after ${wait}s"
}

# ------------------------------------------------------------------- checks

kubectl_admin() { "$bin/kubectl" --kubeconfig "$admin_kubeconfig" --request-timeout=5s "$@"; }

etcd_ok() { curl -fsS -m 2 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"'; }
containerd_ok() {
	[ -S "$sock" ] && ctr -a "$sock" --timeout 2s plugins ls 2>/dev/null |
		grep -Eq '^io\.containerd\.grpc\.v1[[:space:]]+cri[[:space:]].*[[:space:]]ok[[:space:]]*$'
}
apiserver_ok() {
	[ -f "$pki/admin.crt" ] && [ "$(curl -sS -m 3 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" \
		--key "$pki/admin.key" "$api_url/readyz" 2>/dev/null)" = ok ]
}
kubelet_ok() { [ "$(curl -sS -m 2 "http://127.0.0.1:$kubelet_healthz_port/healthz" 2>/dev/null)" = ok ]; }
node_ready() {
	local out status beat started
	out=$(kubectl_admin get node "$node" -o \
		jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null) || return 1
	read -r status beat <<<"$out"
	[ "$status" = True ] || return 1
	# No node lifecycle controller marks a silent node NotReady: only a
	# heartbeat from the running kubelet counts.
	started=$(stat -c %Y "$run/kubelet.pid" 2>/dev/null) || return 1
	[ "$(date -d "$beat" +%s 2>/dev/null || echo 0)" -ge $((started - 1)) ]
}

# port_user PORT: the process listening on 127.0.0.1:PORT or *:PORT, if any.
port_user() { ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n1 | sed 's/users:(("//; s/",pid=/ pid /'; }

# fail NAME WHAT FIX...: the component's log tail, then the fixes.
fail() {
	local name=$1 what=$2
	shift 2
	die "$what" "$(log_tail "$name")" "$@" \
		"logs: $logs/; to start from scratch: $0 stop && rm -rf $state && $0"
}

# wait_healthy NAME CHECK FIX...: waits until CHECK succeeds while NAME lives.
wait_healthy() {
	local name=$1 check=$2 deadline=$((SECONDS + timeout))
	shift 2
	until $check; do
		[ -n "$(pid_of "$name")" ] || fail "$name" "$name exited while starting" "$@"
		[ "$SECONDS" -lt "$deadline" ] || fail "$name" "$name is not healthy after ${timeout}s" "$@" \
			"on a busy machine, raise OCIAPP_K8S_TIMEOUT"
		sleep 0.2
	done
}

# ensure NAME CHECK SPEC FIX CMD...: leaves a healthy NAME running as SPEC
# alone; otherwise (dead, unhealthy, or started with another SPEC) restarts it.
ensure() {
	local name=$1 check=$2 spec=$3 fix=$4 pid port t0
	shift 4
	pid=$(pid_of "$name") || true
	if [ -n "$pid" ]; then
		if [ "$(cat "$run/$name.spec" 2>/dev/null)" != "$spec" ]; then
			say "$name (pid $pid) runs an older configuration, restarting it"
			stop_process "$name"
		elif $check; then
			return 0
		else
			# Maybe still starting: give it the usual time before calling it broken.
			local deadline=$((SECONDS + timeout / 4))
			while [ "$SECONDS" -lt "$deadline" ] && [ -n "$(pid_of "$name")" ] && ! $check; do sleep 0.2; done
			$check && return 0
			say "$name (pid $pid) is not healthy, restarting it"
			stop_process "$name"
		fi
	fi
	for port in $(ports_of "$name"); do
		local user
		user=$(port_user "$port") || true
		[ -z "$user" ] || die "$name cannot start: port $port is taken by $user" \
			"stop that process (it is not one this script started), then rerun"
	done
	t0=$(now)
	start "$name" "$spec" "$@"
	wait_healthy "$name" "$check" "$fix"
	say "$name started (pid $(pid_of "$name")) and healthy in $(since "$t0")"
}

ports_of() {
	case $1 in
	etcd) echo "${etcd_url##*:} ${etcd_peer_url##*:}" ;;
	kube-apiserver) echo "$api_port" ;;
	kubelet) echo "$kubelet_port $kubelet_healthz_port" ;;
	esac
}

# ---------------------------------------------------------------- packages

ensure_packages() {
	local missing="" entry apt_log=$logs/apt.log
	for entry in $packages; do
		[ -e "${entry#*:}" ] || missing="$missing ${entry%%:*}"
	done
	[ -n "$missing" ] || return 0
	say "installing$missing with apt (log: $apt_log)"
	# shellcheck disable=SC2086 # a list of packages
	if ! { DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends $missing ||
		{ apt-get -o DPkg::Lock::Timeout=300 update -q &&
			DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends $missing; }; } \
		>>"$apt_log" 2>&1; then
		die "installing$missing failed" "$(tail -n 10 "$apt_log")" \
			"check that an apt mirror is reachable (apt-get update), then rerun"
	fi
	# Debian's etcd package starts its own etcd where services may start;
	# this cluster runs its own instance on other ports.
	if [[ $missing == *etcd-server* ]] && [ -x /etc/init.d/etcd ]; then
		/etc/init.d/etcd stop >>"$apt_log" 2>&1 || true
	fi
}

# ------------------------------------------------------------------ binaries

# The binaries are cached per Kubernetes version and wrapper go.sum, outside
# the checkout, so fresh clones on the same machine reuse them.
bin_dir() { echo "$cache/$version-$(sha256sum "$wrapper/go.sum" | cut -c1-12)/bin"; }

# missing_binaries: the binaries not yet built into $bin.
missing_binaries() {
	local name
	for name in kube-apiserver kubelet kubectl pause smoke; do
		[ -x "$bin/$name" ] || printf ' %s' "$name"
	done
}

ensure_binaries() {
	local want name t0 tmp
	want=$(missing_binaries)
	[ -n "$want" ] || return 0
	# Its own lock, so that a build for another cache does not hold up the cluster.
	mkdir -p "$cache"
	exec 8>"$cache/build.lock"
	if ! flock -n 8; then
		say "waiting for another build into $cache (lock $cache/build.lock)"
		flock 8
		want=$(missing_binaries)
		[ -n "$want" ] || { exec 8>&-; return 0; }
	fi
	command -v go >/dev/null 2>&1 || die "Go is needed to build$want" \
		"install Go 1.24 or later (https://go.dev/dl/) and put it on PATH, then rerun"
	local pkgs="" ldflags="-s -w" p
	for name in $want; do
		case $name in
		pause | smoke) pkgs="$pkgs ./$name" ;;
		*) pkgs="$pkgs k8s.io/kubernetes/cmd/$name" ;;
		esac
	done
	local minor=${version#v1.}
	minor=${minor%%.*}
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags="$ldflags -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	say "building$want $version (log: $logs/build.log; 8 to 20 CPU-minutes with a cold Go cache)"
	t0=$(now)
	tmp=$(dirname "$bin")/bin.tmp.$$
	mkdir -p "$tmp" "$cache/go-build"
	echo "=== $(date -u +%FT%TZ) go build$pkgs" >>"$logs/build.log"
	# shellcheck disable=SC2086 # pkgs is a list
	if ! (cd "$wrapper" && GOCACHE=$cache/go-build CGO_ENABLED=0 nice -n "$build_nice" \
		go build -trimpath -ldflags "$ldflags" -o "$tmp/" $pkgs) >>"$logs/build.log" 2>&1 8>&- 9>&-; then
		rm -rf "$tmp"
		die "building$want failed" "last lines of $logs/build.log:" "$(tail -n 15 "$logs/build.log")" \
			"a download error means the Go module proxy is unreachable (check GOPROXY);" \
			"'signal: killed' means the machine ran out of memory (a link needs about 2 GB)"
	fi
	mkdir -p "$bin"
	for name in $want; do mv -f "$tmp/$name" "$bin/$name"; done
	rmdir "$tmp"
	exec 8>&-
	say "built$want in $(since "$t0") into $bin"
}

# oci_tar BINARY ENTRY IMAGE OUT: writes OUT, an OCI image layout tar of the
# image IMAGE whose only file and entrypoint is BINARY as /ENTRY; prints the
# manifest digest.
oci_tar() {
	local binary=$1 entry=$2 image=$3 out=$4 dir arch layer layer_size config config_size manifest manifest_size
	dir=$(mktemp -d)
	arch=$(go env GOARCH 2>/dev/null || dpkg --print-architecture)
	mkdir -p "$dir/rootfs" "$dir/layout/blobs/sha256"
	cp "$binary" "$dir/rootfs/$entry"
	tar -C "$dir/rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$dir/layer.tar" "$entry"
	read -r layer layer_size <<<"$(blob "$dir" "$dir/layer.tar")"
	printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/%s"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$arch" "$entry" "$layer" >"$dir/config.json"
	read -r config config_size <<<"$(blob "$dir" "$dir/config.json")"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$config" "$config_size" "$layer" "$layer_size" >"$dir/manifest.json"
	read -r manifest manifest_size <<<"$(blob "$dir" "$dir/manifest.json")"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$manifest" "$manifest_size" "$arch" "$image" "${image##*:}" >"$dir/layout/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/layout/oci-layout"
	tar -C "$dir/layout" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out.tmp" .
	mv -f "$out.tmp" "$out"
	rm -rf "$dir"
	echo "sha256:$manifest"
}

# blob DIR FILE: stores FILE as a blob of DIR's layout; prints "HEX SIZE".
blob() {
	local sum
	sum=$(sha256sum "$2" | cut -d' ' -f1)
	cp "$2" "$1/layout/blobs/sha256/$sum"
	echo "$sum $(stat -c %s "$2")"
}

# ensure_image BINARY ENTRY IMAGE: IMAGE, made of BINARY, in the cluster's
# containerd (namespace k8s.io); imported only when missing or different.
ensure_image() {
	local binary=$1 entry=$2 image=$3 out digest t0
	out=$(dirname "$bin")/images/${entry}.tar
	mkdir -p "$(dirname "$out")"
	t0=$(now)
	digest=$(oci_tar "$binary" "$entry" "$image" "$out")
	if ctr -a "$sock" -n k8s.io images ls "name==$image" 2>/dev/null | grep -q " $digest "; then
		return 0
	fi
	ctr -a "$sock" -n k8s.io images import "$out" >>"$logs/containerd.log" 2>&1 ||
		fail containerd "importing $image into $sock failed" "is the disk under $state full? (df -h $state)"
	say "imported $image ($digest) in $(since "$t0")"
}

# --------------------------------------------------------------------- PKI

# cert NAME SUBJECT EXTENSIONS: a key and a certificate signed by the
# cluster CA (EC P-256, 10 years).
cert() {
	local name=$1 subject=$2 ext=$3
	if ! openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>>"$logs/openssl.log" ||
		! openssl req -new -key "$pki/$name.key" -subj "$subject" 2>>"$logs/openssl.log" |
		openssl x509 -req -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
			-days 3650 -extfile <(printf '%s\n' "$ext") -out "$pki/$name.crt" 2>>"$logs/openssl.log"; then
		die "creating the certificate $pki/$name.crt with openssl failed" "$(tail -n 5 "$logs/openssl.log")" \
			"check 'openssl version' (3.x is needed), then rerun"
	fi
}

ensure_pki() {
	[ -f "$pki/done" ] && return 0
	local t0 client server
	t0=$(now)
	rm -rf "$pki"
	mkdir -p "$pki"
	chmod 700 "$pki"
	openssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=ociapp-k8s-ca" -days 3650 \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$pki/ca.crt" 2>/dev/null
	client=$'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
	server=$'keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth'
	cert apiserver "/CN=kube-apiserver" "$server
subjectAltName=DNS:localhost,DNS:$node,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:${service_cidr%.*/*}.1"
	cert admin "/O=system:masters/CN=ociapp-admin" "$client"
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
	cert kubelet-client "/O=system:nodes/CN=system:node:$node" "$client"
	cert kubelet-server "/CN=$node" "$server
subjectAltName=DNS:$node,DNS:localhost,IP:127.0.0.1"
	openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" 2>/dev/null
	openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
	if [ ! -s "$pki/kubelet-server.crt" ] || [ ! -s "$pki/sa.pub" ]; then
		die "creating the cluster's certificates with openssl failed" "rerun; if it fails again, check 'openssl version' (3.x needed)"
	fi
	echo "$node" >"$pki/done"
	say "created certificates in $(since "$t0")"
}

# kubeconfig FILE CERT: a kubeconfig for the local apiserver with CERT's identity.
kubeconfig() {
	cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ociapp-k8s
  cluster:
    server: $api_url
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$pki/$2.crt")
    client-key-data: $(base64 -w0 "$pki/$2.key")
contexts:
- name: ociapp-k8s
  context:
    cluster: ociapp-k8s
    user: $2
current-context: ociapp-k8s
EOF
	chmod 600 "$1.tmp"
	mv -f "$1.tmp" "$1"
}

# ------------------------------------------------------------- configuration

write_configs() {
	mkdir -p "$state/cni/net.d" "$state/cni/ipam"
	cat >"$state/cni/net.d/10-ociapp-k8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ociapp-k8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$state/cni/ipam",
        "ranges": [[{ "subnet": "$pod_cidr" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "loopback" }
  ]
}
EOF
	# restrict_oom_score_adj: root here may not lower oom_score_adj, and the
	# kubelet asks -998 for every sandbox, which runc then fails to set.
	cat >"$state/containerd.toml" <<EOF
version = 2
root = "$state/containerd"
state = "$run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$state/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
    max_conf_num = 1
EOF
	# Eviction thresholds near zero and image GC off: a busy CI disk must not
	# evict test pods or remove imported images (there is no registry to pull from).
	cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $kubelet_port
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
readOnlyPort: 0
tlsCertFile: $pki/kubelet-server.crt
tlsPrivateKeyFile: $pki/kubelet-server.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: $pki/ca.crt
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://$sock
podLogsDir: $state/pod-logs
volumePluginDir: $state/kubelet-plugins
resolvConf: /etc/resolv.conf
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 110
EOF
}

# spec FILES CMD...: what a component runs, plus the hash of the
# configuration files (a space-separated list, maybe empty) it reads.
spec() {
	local files=$1
	shift
	# shellcheck disable=SC2086 # a list
	printf '%s | %s' "$*" "$(cat /dev/null $files | sha256sum | cut -c1-12)"
}

# ------------------------------------------------------------------------ up

check_host() {
	[ "$(id -u)" -eq 0 ] || die "this script must run as root (it starts containerd and the kubelet)" \
		"rerun as root, e.g. sudo $0"
	local addr
	addr=$(getent ahostsv4 "$node" 2>/dev/null | awk 'NR == 1 { print $1 }')
	if [ -z "$addr" ]; then
		# The apiserver reaches the kubelet by node name, over loopback.
		echo "127.0.0.1 $node" >>/etc/hosts
		say "added '127.0.0.1 $node' to /etc/hosts (the node name must resolve to loopback)"
	elif [[ $addr != 127.* ]]; then
		die "the node name $node resolves to $addr, not to 127.0.0.1" \
			"the kubelet listens on 127.0.0.1 only; put '127.0.0.1 $node' first in /etc/hosts, then rerun"
	fi
}

up() {
	local t_start t0
	t_start=$(now)
	check_host
	mkdir -p "$state" "$run" "$logs" "$cache" "$(dirname "$lock_file")"
	bin=$(bin_dir)
	ensure_packages
	ensure_binaries
	exec 9>"$lock_file"
	if ! flock -n 9; then
		say "waiting for another ensure-kubernetes.sh (lock $lock_file)"
		flock 9
	fi
	if [ "$(readlink "$state/bin")" != "$bin" ]; then
		# Replaced in one rename: tests may be running kubectl through it.
		ln -sfn "$bin" "$state/bin.tmp"
		mv -fT "$state/bin.tmp" "$state/bin"
	fi

	# Fast path: everything healthy and configured as this script would.
	write_configs
	ensure_pki
	[ "$(cat "$pki/done")" = "$node" ] || die "the cluster state in $state belongs to node $(cat "$pki/done"), not $node" \
		"the host name changed: run '$0 stop && rm -rf $state', then rerun"
	# Rewritten every run (they follow from the certificates), which also repairs a damaged one.
	kubeconfig "$admin_kubeconfig" admin
	kubeconfig "$state/kubelet.kubeconfig" kubelet-client

	local containerd_cmd etcd_cmd apiserver_cmd kubelet_cmd
	local containerd_files="$state/containerd.toml $state/cni/net.d/10-ociapp-k8s.conflist"
	containerd_cmd=(containerd --config "$state/containerd.toml")
	etcd_cmd=(etcd --name ociapp-k8s --data-dir "$state/etcd"
		--listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url"
		--listen-peer-urls "$etcd_peer_url" --initial-advertise-peer-urls "$etcd_peer_url"
		--initial-cluster "ociapp-k8s=$etcd_peer_url" --unsafe-no-fsync --logger zap --log-level warn)
	# No controller-manager: pods name their node (spec.nodeName) and carry no
	# service-account token, hence no ServiceAccount admission. The endpoint
	# reconciler would try to publish the loopback address, which is invalid.
	# shellcheck disable=SC2054 # commas inside flag values
	apiserver_cmd=("$bin/kube-apiserver" --etcd-servers "$etcd_url"
		--bind-address 127.0.0.1 --secure-port "$api_port"
		--service-cluster-ip-range "$service_cidr" --endpoint-reconciler-type none
		--client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key"
		--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key"
		--kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types Hostname,InternalIP
		--service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub"
		--service-account-signing-key-file "$pki/sa.key"
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction
		--disable-admission-plugins ServiceAccount --profiling=false)
	kubelet_cmd=("$bin/kubelet" --config "$state/kubelet.yaml" --kubeconfig "$state/kubelet.kubeconfig"
		--root-dir "$state/kubelet" --hostname-override "$node")

	if [ -n "$(pid_of containerd)" ] && [ -n "$(pid_of etcd)" ] && [ -n "$(pid_of kube-apiserver)" ] &&
		[ -n "$(pid_of kubelet)" ] &&
		[ "$(cat "$run/containerd.spec")" = "$(spec "$containerd_files" "${containerd_cmd[@]}")" ] &&
		[ "$(cat "$run/etcd.spec")" = "$(spec "" "${etcd_cmd[@]}")" ] &&
		[ "$(cat "$run/kube-apiserver.spec")" = "$(spec "" "${apiserver_cmd[@]}")" ] &&
		[ "$(cat "$run/kubelet.spec")" = "$(spec "$state/kubelet.yaml" "${kubelet_cmd[@]}")" ] &&
		containerd_ok && ctr -a "$sock" -n k8s.io images ls -q "name==$pause_image" | grep -q . &&
		etcd_ok && apiserver_ok && kubelet_ok && node_ready; then
		write_env
		say "cluster running and healthy (node $node Ready), nothing to do ($(since "$t_start"))"
		return 0
	fi

	local fresh_containerd=no
	[ -n "$(pid_of containerd)" ] || fresh_containerd=yes
	ensure containerd containerd_ok "$(spec "$containerd_files" "${containerd_cmd[@]}")" \
		"containerd runs beside Docker's with its own root $state/containerd and socket $sock; \
a 'snapshotter' error means $state is on a file system without overlayfs support" \
		"${containerd_cmd[@]}"
	if [ "$fresh_containerd" = yes ] && [ -z "$(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null)" ]; then
		# No pod survived: free the addresses of pods that went away unannounced.
		rm -rf "$state/cni/ipam/ociapp-k8s"
	fi
	ensure_image "$bin/pause" pause "$pause_image"
	ensure etcd etcd_ok "$(spec "" "${etcd_cmd[@]}")" \
		"'member ... has already been bootstrapped' or a corrupt WAL: remove $state/etcd (the cluster's objects are lost) and rerun" \
		"${etcd_cmd[@]}"
	ensure kube-apiserver apiserver_ok "$(spec "" "${apiserver_cmd[@]}")" \
		"'connection refused' to ${etcd_url}: etcd is down, see $logs/etcd.log" \
		"${apiserver_cmd[@]}"
	save_sysctls
	ensure kubelet kubelet_ok "$(spec "$state/kubelet.yaml" "${kubelet_cmd[@]}")" \
		"'validate service connection' or CRI errors: containerd at $sock is down, see $logs/containerd.log;
'cgroup' errors: the kubelet needs cgroup v1 hierarchies cpu, cpuacct, cpuset, memory, pids mounted under /sys/fs/cgroup" \
		"${kubelet_cmd[@]}"

	t0=$(now)
	local deadline=$((SECONDS + timeout))
	until node_ready; do
		[ "$SECONDS" -lt "$deadline" ] || fail kubelet "node $node is not Ready after ${timeout}s" \
			"see the Ready condition: $bin/kubectl --kubeconfig $admin_kubeconfig describe node $node" \
			"'NetworkPluginNotReady' means containerd found no CNI config in $state/cni/net.d or no plugins in /usr/lib/cni"
		[ -n "$(pid_of kubelet)" ] || fail kubelet "the kubelet exited" "fix the cause above, then rerun"
		sleep 0.2
	done
	say "node $node Ready (waited $(since "$t0"))"
	write_env
	say "cluster up in $(since "$t_start"): node $node Ready; source $env_file (KUBECONFIG=$admin_kubeconfig)"
}

write_env() {
	cat >"$env_file.tmp" <<EOF
export KUBECONFIG=$admin_kubeconfig
export OCIAPP_K8S_CONTAINERD=$sock
export OCIAPP_K8S_NODE=$node
export OCIAPP_KUBECTL=$state/bin/kubectl
export PATH=$state/bin:\$PATH
EOF
	mv -f "$env_file.tmp" "$env_file"
}

save_sysctls() {
	[ -f "$state/sysctl.before" ] && return 0
	local key
	for key in $kubelet_sysctls; do
		echo "$key=$(sysctl -n "$key")"
	done >"$state/sysctl.before"
}

# ---------------------------------------------------------------------- stop

stop_all() {
	[ "$(id -u)" -eq 0 ] || die "stop must run as root" "rerun as root"
	mkdir -p "$run" "$(dirname "$lock_file")"
	exec 9>"$lock_file"
	flock 9
	local t0 ids="" id netns=""
	t0=$(now)
	# The kubelet first, or it restarts the containers removed below.
	stop_process kubelet 15
	if [ -n "$(pid_of containerd)" ]; then
		ids=$(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null || true)
		netns=""
		for id in $ids; do
			netns="$netns $(ctr -a "$sock" -n k8s.io containers info "$id" 2>/dev/null |
				grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' || true)"
			ctr -a "$sock" -n k8s.io tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		for id in $ids; do
			local i
			for ((i = 0; i < 50; i++)); do
				ctr -a "$sock" -n k8s.io tasks delete "$id" >/dev/null 2>&1 && break
				ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null | grep -qx "$id" || break
				sleep 0.1
			done
			ctr -a "$sock" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
		done
		[ -z "$ids" ] || say "removed $(echo "$ids" | wc -w) containers"
	fi
	stop_process kube-apiserver 15
	stop_process etcd 10
	stop_process containerd 10
	# What the pods leave behind: mounts, network namespaces, addresses, the bridge.
	findmnt -rn -o TARGET | { grep -E "^($state|$run)/" || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	for id in $netns; do
		[ -e "$id" ] && { umount -l "$id" 2>/dev/null || true; rm -f "$id"; }
	done
	rm -rf "$state/cni/ipam/ociapp-k8s" "$state/containerd/io.containerd.grpc.v1.cri/sandboxes" \
		"$state/containerd/io.containerd.grpc.v1.cri/containers"
	ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge"
	find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} + 2>/dev/null || true
	remove_kubelet_iptables
	if [ -f "$state/sysctl.before" ]; then
		xargs sysctl -q -w <"$state/sysctl.before" || true
		rm -f "$state/sysctl.before"
	fi
	say "stopped in $(since "$t0")"
}

# remove_kubelet_iptables: the chains the kubelet adds at start (it blocks
# loopback addresses from non-loopback sources in KUBE-FIREWALL).
remove_kubelet_iptables() {
	local ipt table chain
	for ipt in iptables ip6tables; do
		command -v "$ipt" >/dev/null 2>&1 || continue
		for chain in INPUT OUTPUT; do
			while "$ipt" -w -D "$chain" -j KUBE-FIREWALL 2>/dev/null; do :; done
		done
		for table in filter nat mangle; do
			for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
				if "$ipt" -w -t "$table" -F "$chain" 2>/dev/null; then
					"$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
				fi
			done
		done
	done
}

# -------------------------------------------------------------------- status

status() {
	bin=$(bin_dir)
	local name check bad=0
	for name in containerd etcd kube-apiserver kubelet; do
		case $name in
		containerd) check=containerd_ok ;;
		etcd) check=etcd_ok ;;
		kube-apiserver) check=apiserver_ok ;;
		kubelet) check=kubelet_ok ;;
		esac
		if [ -z "$(pid_of "$name")" ]; then
			echo "$name: not running"
			bad=1
		elif $check; then
			echo "$name: healthy (pid $(pid_of "$name"))"
		else
			echo "$name: running (pid $(pid_of "$name")) but not healthy"
			bad=1
		fi
	done
	if [ -x "$bin/kubectl" ] && node_ready; then echo "node $node: Ready"; else echo "node $node: not Ready"; bad=1; fi
	return $bad
}

# --------------------------------------------------------------------- smoke

# smoke: a pod made of a static binary, created from the host with kubectl,
# serves a Unix socket in a hostPath directory that the host then dials.
smoke() {
	up
	local dir=$run/smoke pod=ociapp-k8s-smoke t0 t1 answer
	ensure_image "$bin/smoke" smoke "$smoke_image"
	kubectl_admin delete pod "$pod" --ignore-not-found --wait=true >/dev/null
	rm -rf "$dir"
	# A non-root pod cannot bind in a root-owned directory.
	install -d -o 65534 -g 65534 -m 0755 "$dir"
	t0=$(now)
	kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  labels: {app.kubernetes.io/name: ociapp-k8s-smoke}
spec:
  nodeName: $node
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: 5
  securityContext:
    runAsNonRoot: true
    runAsUser: 65534
    runAsGroup: 65534
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: smoke
    image: $smoke_image
    imagePullPolicy: Never
    args: [serve, /sock]
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    resources:
      limits: {memory: 32Mi, cpu: 100m}
    volumeMounts:
    - {name: sock, mountPath: /sock}
  volumes:
  - name: sock
    hostPath: {path: $dir, type: Directory}
EOF
	say "pod $pod created in $(since "$t0")"
	# The socket appears as soon as the container runs; the pod's status
	# follows when the kubelet next lists containers (every second).
	local deadline=$((SECONDS + timeout))
	until [ -S "$dir/smoke.sock" ]; do
		[ "$SECONDS" -lt "$deadline" ] ||
			fail kubelet "the pod's socket $dir/smoke.sock did not appear" "$(kubectl_admin describe pod "$pod" | tail -n 15)"
		sleep 0.01
	done
	say "pod $pod socket ready $(since "$t0") after creation"
	kubectl_admin wait --for=condition=Ready "pod/$pod" --timeout="${timeout}s" >/dev/null ||
		fail kubelet "pod $pod did not become Ready" "$(kubectl_admin describe pod "$pod" | tail -n 15)"
	say "pod $pod Running and Ready $(since "$t0") after creation"
	answer=$("$bin/smoke" dial "$dir/smoke.sock") || die "dialing the pod's socket failed"
	say "host dialed $dir/smoke.sock: $answer"
	say "pod log: $(kubectl_admin logs "$pod")"
	t1=$(now)
	kubectl_admin delete pod "$pod" --wait=true >/dev/null
	say "pod deleted in $(since "$t1")"
	rm -rf "$dir"
}

main() {
	case ${1:-up} in
	up) up ;;
	stop) stop_all ;;
	status) status ;;
	smoke) smoke ;;
	build)
		bin=$(bin_dir)
		mkdir -p "$logs"
		ensure_binaries
		say "binaries in $bin"
		;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
	*) die "unknown command '$1'" "usage: $0 [up|stop|status|smoke|build]" ;;
	esac
}

# One line: bash has read all of it before running it, so editing this file
# while it runs cannot make it run anything else.
main "$@"; exit
