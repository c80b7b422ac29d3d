#!/usr/bin/env bash
# Builds the local base images that tests and CI builds use, without any
# container registry: a Debian trixie root file system made by mmdebstrap from
# the Debian mirror, imported into Docker under a fixed local name. An image is
# rebuilt only when its recipe changes: the recipe hash is stored in the image
# label dev.ociapp.recipe and compared on every run. See docs/environment.md.
#
# Usage: scripts/ensure-base-images.sh [--force]
#
# Environment:
#   OCIAPP_DEBIAN_MIRROR      Debian mirror     (default http://deb.debian.org/debian)
#   OCIAPP_BASE_IMAGES_LOG    build log         (default /var/log/ociapp-base-images.log)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
recipes=$here/base-images
mirror=${OCIAPP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
log_file=${OCIAPP_BASE_IMAGES_LOG:-/var/log/ociapp-base-images.log}
apt_log=/var/log/ociapp-apt.log
[ "$(id -u)" -eq 0 ] || apt_log=${XDG_CACHE_HOME:-$HOME/.cache}/ociapp-apt.log
label=dev.ociapp.recipe
force=no

say() { printf 'ensure-base-images: %s\n' "$*"; }
die() {
	printf 'ensure-base-images: ERROR: %s\n' "$1" >&2
	shift
	for line in "$@"; do printf '%s\n' "$line" | sed 's/^/  /' >&2; done
	exit 1
}

for arg in "$@"; do
	case $arg in
	--force) force=yes ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument '$arg'" "usage: $0 [--force]" ;;
	esac
done

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

# Log files live in /var/log for root (CI); other users fall back to a
# per-user file rather than failing on permissions.
if ! { touch "$log_file"; } 2>/dev/null; then
	log_file=${XDG_CACHE_HOME:-$HOME/.cache}/ociapp-base-images.log
	mkdir -p "$(dirname "$log_file")"
fi

bash "$here/ensure-docker.sh"

# Concurrent runs (several test suites starting at once) would each build the
# same image; the second waits and then finds it up to date.
lock_file=${TMPDIR:-/tmp}/ociapp-base-images.lock
# Opened read-only so that root and other users can share one lock file.
if [ ! -e "$lock_file" ]; then
	{ : >>"$lock_file" && chmod 666 "$lock_file"; } 2>/dev/null || true
fi
exec 9<"$lock_file"
if ! flock -n 9; then
	say "another run is building base images, waiting"
	flock 9
fi

# Scratch directories of builds, removed however the script ends.
tmp_dirs=()
cleanup() { [ ${#tmp_dirs[@]} -eq 0 ] || rm -rf "${tmp_dirs[@]}"; }
trap cleanup EXIT

ensure_mmdebstrap() {
	local missing=()
	command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
	[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
	[ ${#missing[@]} -eq 0 ] && return
	say "installing ${missing[*]} with apt (log: $apt_log)"
	mkdir -p "$(dirname "$apt_log")"
	if ! { as_root apt-get update -q &&
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } \
		>>"$apt_log" 2>&1; then
		die "installing ${missing[*]} failed" \
			"see $apt_log; check that an apt mirror is reachable (apt-get update)" \
			"$(tail -n 10 "$apt_log" 2>/dev/null)"
	fi
}

# image_recipe IMAGE: the recipe hash currently stored on IMAGE, empty when the
# image does not exist.
image_recipe() {
	docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null || true
}

# recipe_hash FUNCTION PACKAGES_FILE: hash of the build function's body (as
# bash prints it) and the sorted package list, so that comments, layout and
# order do not count.
recipe_hash() {
	{
		declare -f "$1"
		packages "$2" | tr , '\n' | LC_ALL=C sort -u
	} | sha256sum | cut -c1-16
}

# packages FILE: the package names in FILE, comma separated.
packages() {
	sed 's/#.*//' "$1" | tr -s ' \t' '\n' | sed '/^$/d' | paste -sd, -
}

# build_python IMAGE HASH PACKAGES_FILE: Debian trixie minbase with Python
# 3.13 and the packages the Python SDK and its tests need.
build_python() {
	local image=$1 hash=$2 pkgs=$3 tmp mode
	tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/ociapp-base.XXXXXX")
	tmp_dirs+=("$tmp")
	mode=root
	[ "$(id -u)" -eq 0 ] || mode=unshare
	{
		echo "=== $(date -u +%FT%TZ) building $image (recipe $hash)"
		# Updates and security are in the sources list so that apt-get in a
		# later `docker build FROM` this image sees the same suites.
		# Recommends are off for good (pip would pull in a compiler).
		# Documentation is dropped except for copyright files.
		# shellcheck disable=SC2016 # $1 is the root, expanded by mmdebstrap's hook shell.
		mmdebstrap --mode="$mode" --variant=minbase --format=tar \
			--include="$(packages "$pkgs")" \
			--aptopt='APT::Install-Recommends "false"' \
			--dpkgopt='path-exclude=/usr/share/doc/*' \
			--dpkgopt='path-include=/usr/share/doc/*/copyright' \
			--dpkgopt='path-exclude=/usr/share/man/*' \
			--dpkgopt='path-exclude=/usr/share/info/*' \
			--dpkgopt='path-exclude=/usr/share/locale/*' \
			--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/cache/ldconfig/aux-cache' \
			trixie "$tmp/rootfs.tar" \
			"deb $mirror trixie main" \
			"deb $mirror trixie-updates main" \
			"deb ${mirror%/debian}/debian-security trixie-security main"
	} >>"$log_file" 2>&1 || die "mmdebstrap failed building $image" \
		"$(tail -n 15 "$log_file")" \
		"full log: $log_file; see docs/environment.md (Troubleshooting)"
	# PIP_BREAK_SYSTEM_PACKAGES: like the official python image, `pip install`
	# outside a venv installs into the system (/usr/local) instead of refusing.
	docker import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV LANG=C.UTF-8' \
		--change 'ENV PYTHONDONTWRITEBYTECODE=1' \
		--change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
		--change 'CMD ["python3"]' \
		--change "LABEL $label=$hash" \
		--message "ociapp base image, recipe $hash" \
		"$tmp/rootfs.tar" "$image" >>"$log_file" 2>&1 ||
		die "docker import of $image failed" "$(tail -n 5 "$log_file")"
}

# ensure IMAGE FUNCTION PACKAGES_FILE: build IMAGE with FUNCTION unless it
# already carries the current recipe hash.
ensure() {
	local image=$1 fn=$2 hash have old_id start
	hash=$(recipe_hash "$fn" "$3")
	have=$(image_recipe "$image")
	old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
	if [ "$have" = "$hash" ] && [ "$force" = no ]; then
		say "$image up to date (recipe $hash)"
		return
	fi
	ensure_mmdebstrap
	say "building $image (recipe $hash${have:+, was $have}; log: $log_file)"
	start=$SECONDS
	"$fn" "$image" "$hash" "$3"
	# The previous build is now untagged; drop it unless a container still
	# uses it (then docker refuses and it stays).
	if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect --format '{{.Id}}' "$image")" ]; then
		docker image rm "$old_id" >/dev/null 2>&1 || true
	fi
	say "built $image in $((SECONDS - start))s ($(docker image inspect --format '{{.Size}}' "$image" | awk '{ printf "%d MB", $1 / 1e6 }'))"
}

ensure ociapp-local/python:3.13 build_python "$recipes/python.packages"
