#!/usr/bin/env bash
# Builds Stride's runtime image from binaries built on this machine, once: it is skipped when an
# image made from the same binaries, Dockerfile and base already exists.
#
#   docker/build-images.sh                  target/release binaries -> stride:release, stride:latest
#   docker/build-images.sh --profile debug  target/debug binaries   -> stride:debug
#
# The base: $STRIDE_DOCKER_BASE if set; else stride-base:bookworm if this machine has it; else
# debian:bookworm-slim if it can be pulled; else stride-base:bookworm made here by
# docker/build-base.sh (debootstrap, no registry).
#
# Only the six binaries and this directory are sent to the daemon (a staged context of hard
# links under target/docker/), never the 30 GB of target/.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

profile=release
tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 64 ;;
  esac
done
case "$profile" in debug|release) ;; *) echo "--profile is debug or release" >&2; exit 64 ;; esac
tag=${tag:-stride:$profile}

bins=(stride-scheduler stride-api-gateway stride-agent stride-health-checker stride-lb-sync stride)
target=${CARGO_TARGET_DIR:-target}
for b in "${bins[@]}"; do
  if [ ! -x "$target/$profile/$b" ]; then
    flag=""; [ "$profile" = release ] && flag=" --release"
    echo "$target/$profile/$b is missing: run \`cargo build$flag --bins\` first" >&2
    exit 1
  fi
done

if ! docker info >/dev/null 2>&1; then
  echo "no Docker Engine answers \`docker info\`" >&2
  exit 1
fi

if [ -n "${STRIDE_DOCKER_BASE:-}" ]; then
  base=$STRIDE_DOCKER_BASE
elif docker image inspect stride-base:bookworm >/dev/null 2>&1; then
  base=stride-base:bookworm
elif docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
     || timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
  base=debian:bookworm-slim
else
  log "no registry: making stride-base:bookworm with debootstrap"
  docker/build-base.sh
  base=stride-base:bookworm
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

# The stamp: what the image is made of. Equal stamp, no build.
stamp=$( { sha256sum docker/Dockerfile; echo "$base_id"; for b in "${bins[@]}"; do sha256sum "$target/$profile/$b"; done; } \
         | sed "s#$target/$profile/##" | sha256sum | cut -c1-32)
have=$(docker image inspect -f '{{index .Config.Labels "org.stride.stamp"}}' "$tag" 2>/dev/null || true)
if [ "$have" = "$stamp" ]; then
  log "$tag is up to date (base $base)"
  exit 0
fi

ctx=$target/docker/context
rm -rf "$ctx"
mkdir -p "$ctx/target/$profile" "$ctx/docker"
for b in "${bins[@]}"; do
  ln "$target/$profile/$b" "$ctx/target/$profile/$b" 2>/dev/null || cp "$target/$profile/$b" "$ctx/target/$profile/$b"
done
cp docker/Dockerfile "$ctx/docker/"
log "building $tag from $target/$profile on $base"
started=$(date +%s)
# The legacy builder warns that it is deprecated on every run; show its output only on failure.
if ! out=$(docker build -q -f "$ctx/docker/Dockerfile" --build-arg "BASE=$base" --build-arg "PROFILE=$profile" \
             --label "org.stride.stamp=$stamp" -t "$tag" "$ctx" 2>&1); then
  echo "$out" >&2
  exit 1
fi
[ "$profile" = release ] && docker tag "$tag" stride:latest
rm -rf "$ctx"
log "$tag built in $(( $(date +%s) - started ))s"
