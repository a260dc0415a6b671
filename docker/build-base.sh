#!/usr/bin/env bash
# Makes Stride's base image, `stride-base:bookworm`, without any registry: Debian's
# `debootstrap` installs a minimal bookworm with the packages Stride's services need into a
# directory, and `docker import` turns that directory into an image.
#
#   docker/build-base.sh            build it unless an image with the same package list exists
#   docker/build-base.sh --force    build it again
#
# Environment:
#   STRIDE_BASE_IMAGE      the tag to make            (default stride-base:bookworm)
#   STRIDE_DEBIAN_MIRROR   where debootstrap downloads (default http://deb.debian.org/debian)
#
# On a machine that can pull images this is not needed: the Dockerfiles default to
# `debian:bookworm-slim` and install the same packages with apt-get (docs/compose.md).
set -euo pipefail

image=${STRIDE_BASE_IMAGE:-stride-base:bookworm}
mirror=${STRIDE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# What the services run besides Stride's binaries: Redis (also Sentinel, `redis-server
# --sentinel`), HAProxy for lb-sync, CA roots for the fetcher and webhooks, python3 for the
# demo apps, busybox for a shell toolbox in tasks, `ip`/`ss` to look around a container.
packages=(redis-server haproxy ca-certificates python3 busybox-static iproute2)
# The label that says what an existing image was made from; a different list rebuilds it.
stamp="$suite:$(IFS=,; echo "${packages[*]}")"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

force=false
case "${1:-}" in
  --force) force=true ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 64 ;;
esac

if ! $force; then
  have=$(docker image inspect -f '{{index .Config.Labels "org.stride.base"}}' "$image" 2>/dev/null || true)
  if [ "$have" = "$stamp" ]; then
    log "$image is up to date ($stamp)"
    exit 0
  fi
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

root=$(mktemp -d "${TMPDIR:-/var/tmp}/stride-base.XXXXXX")
cleanup() {
  # debootstrap mounts /proc and /sys inside the target; never delete through a live mount.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$root/$m" 2>/dev/null && $sudo umount -l "$root/$m" || true
  done
  $sudo rm -rf --one-file-system "$root"
}
trap cleanup EXIT

log "debootstrap $suite (${packages[*]}) from $mirror into $root"
$sudo debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 30 "$root.log" >&2
  echo "debootstrap failed; the whole log is $root.log" >&2
  exit 1
}
rm -f "$root.log"

# What an image needs and a chroot left behind: apt sources for later `apt-get install`, no
# package caches, documentation or logs.
$sudo tee "$root/etc/apt/sources.list" >/dev/null <<EOF
deb http://deb.debian.org/debian $suite main
deb http://deb.debian.org/debian $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
$sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/*
# Debian's packages started nothing in the chroot, but their init links would confuse nobody
# here: containers run one process each, given by docker-compose.yml.

log "docker import -> $image"
$sudo tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL org.stride.base=$stamp" \
  --change 'CMD ["/bin/bash"]' \
  - "$image" >/dev/null
log "$image: $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
