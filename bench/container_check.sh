#!/usr/bin/env bash
# The CPU image, built and run with podman on this machine, end to end:
#
#   bash bench/container_check.sh
#
# Installs podman, runc and debootstrap when missing (apt-get), makes a Debian base image with
# debootstrap (no registry is reachable), builds the Containerfile FROM it with wheels from this
# machine's wheel folders (--no-index), starts the image with temporary inbox, outbox, state and
# config volumes as PUID/PGID 4321, drops a photo, waits for the result and its sidecar on the
# host (owned by 4321), checks /healthz and the image's HEALTHCHECK, sends SIGTERM and checks
# exit 0 within 10 s, then removes what it made (the base image too, unless KEEP_BASE=1). Ends
# with "container check: ok ..." and its figures. WHEELS: the wheel folders, colon-separated.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
say() { echo "[$(($(date +%s) - started)) s] $*"; }
fail() { echo "container check: FAILED: $*" >&2; exit 1; }

for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || apt-get install -y podman runc debootstrap >/dev/null ||
        { apt-get update >/dev/null && apt-get install -y podman runc debootstrap >/dev/null; }
done
# This sandbox lets a container lower its limits, not keep the host's.
RUN_OPTS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
BASE=localhost/stylebox-check-base
IMAGE=localhost/stylebox-check
NAME=stylebox-check-$$
WORK=$(mktemp -d /tmp/stylebox-container-XXXXXX)
PUID=4321 PGID=4321
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    podman rm -f "$NAME" >/dev/null 2>&1 || true
    podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
    [ "${KEEP_BASE:-0}" = 1 ] || podman rmi -f "$BASE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! podman image exists "$BASE"; then
    say "making the base image with debootstrap (Debian bookworm, python3)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,util-linux \
        bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 || fail "debootstrap: see $WORK/debootstrap.log"
    tar -C "$WORK/rootfs" -c . | podman import - "$BASE" >/dev/null
    rm -rf "$WORK/rootfs"
fi

# Every wheel the image needs, fetched here as this machine's pip can (its registry or local
# mirrors: WHEELS adds folders to look in), then mounted into the build and installed from
# there alone (--no-index). A CPU build of torch when one is found (no CUDA libraries in a CPU
# image), with its torchvision.
IFS=: read -r -a dirs <<<"${WHEELS:-/opt/wheels:/opt/pypi/files:/opt/pypi-more/files}"
links=()
for dir in "${dirs[@]}"; do [ -d "$dir" ] && links+=(--find-links "$dir"); done
cpu_torch=$(find "${dirs[@]}" -maxdepth 1 -name 'torch-*+cpu-cp3*.whl' 2>/dev/null | sort | tail -1 || true)
torch="torch torchvision"
if [ -n "$cpu_torch" ]; then
    version=$(basename "$cpu_torch" | cut -d- -f2)               # 2.13.0+cpu
    minor=$(echo "$version" | cut -d. -f2)
    torch="torch==$version torchvision==0.$((minor + 15)).*"
fi
say "fetching the wheels (torch: $torch)"
mkdir -p "$WORK/wheels"
# shellcheck disable=SC2086  # $torch is a list of requirements
# (async-timeout: what redis needs on Debian's Python 3.11.2, which this machine's may not.)
python3 -m pip download --quiet --dest "$WORK/wheels" "${links[@]}" $torch . 'setuptools>=68' \
    'async-timeout>=4.0.3' \
    >"$WORK/download.log" 2>&1 || { tail -20 "$WORK/download.log"; fail "pip download failed"; }
volumes=(--volume "$WORK/wheels:/wheels:ro")
links=" --find-links /wheels"
say "building $IMAGE (torch: $torch)"
build_started=$(date +%s)
podman build --format docker --layers=false --force-rm --runtime runc \
    --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    "${volumes[@]}" --build-arg BASE="$BASE" --build-arg PIP_ARGS="--no-index$links" \
    --build-arg TORCH="$torch" -f Containerfile -t "$IMAGE" . >"$WORK/build.log" 2>&1 ||
    { tail -20 "$WORK/build.log"; fail "the build failed"; }
build_seconds=$(($(date +%s) - build_started))
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')

mkdir -p "$WORK"/{inbox,outbox,state,config}
chown "$PUID:$PGID" "$WORK/inbox" "$WORK/outbox"  # the share's owner
cat >"$WORK/config/config.yaml" <<YAML
inbox: /inbox
outbox: /outbox
state_dir: /state
device: cpu
presets:
  starry_night:
    style: /opt/stylebox/styles/starry_night.jpg
    size: 64
    steps: 30
routing:
  default_preset: starry_night
web:
  listen: 127.0.0.1:$PORT
YAML
say "starting $NAME as $PUID:$PGID, the page on 127.0.0.1:$PORT"
run_started=$(date +%s)
podman run -d --name "$NAME" "${RUN_OPTS[@]}" --network host \
    -e PUID=$PUID -e PGID=$PGID -e STYLEBOX_WEB_LISTEN="127.0.0.1:$PORT" \
    -v "$WORK/inbox:/inbox" -v "$WORK/outbox:/outbox" -v "$WORK/state:/state" \
    -v "$WORK/config:/config" "$IMAGE" >/dev/null || fail "podman run failed"
healthz() { python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$PORT/healthz', timeout=3).read().decode())" 2>/dev/null; }
for _ in $(seq 300); do [ "$(healthz)" = ok ] && break; sleep 1; done
[ "$(healthz)" = ok ] || { podman logs "$NAME" | tail -20; fail "/healthz never said ok"; }
say "/healthz: ok"
cp samples/grace_hopper.jpg "$WORK/inbox/"
dropped=$(date +%s)
result="$WORK/outbox/starry_night/grace_hopper.jpg"
for _ in $(seq 600); do [ -f "$result" ] && [ -f "${result%.jpg}.json" ] && break; sleep 1; done
[ -f "${result%.jpg}.json" ] || { podman logs "$NAME" | tail -20; fail "no result in 10 minutes"; }
first_result=$(($(date +%s) - dropped))
owner=$(stat -c '%u:%g' "$result")
[ "$owner" = "$PUID:$PGID" ] || fail "the result belongs to $owner, not $PUID:$PGID"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['source'] == 'grace_hopper.jpg', d" "${result%.jpg}.json"
say "result and sidecar on the host after $first_result s, owned by $owner"
podman healthcheck run "$NAME" >/dev/null || fail "the image's HEALTHCHECK failed"
say "HEALTHCHECK: healthy"
stop_started=$(date +%s.%N)
podman kill --signal TERM "$NAME" >/dev/null
code=$(podman wait "$NAME")
stop_seconds=$(python3 -c "import time; print(f'{time.time() - $stop_started:.1f}')")
[ "$code" = 0 ] || { podman logs "$NAME" | tail -20; fail "exit code $code after SIGTERM"; }
python3 -c "import sys; sys.exit(float('$stop_seconds') > 10)" || fail "stopped after $stop_seconds s"
say "SIGTERM: exit 0 after $stop_seconds s"
echo "container check: ok image $((size / 1000000)) MB, build ${build_seconds} s, first result \
${first_result} s after the drop ($((dropped - run_started + first_result)) s after the start), \
exit 0 ${stop_seconds} s after SIGTERM"
