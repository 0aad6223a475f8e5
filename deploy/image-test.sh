#!/usr/bin/env bash
# Builds the image of deploy/Dockerfile and runs it, with podman and no container registry.
#   1. podman (with runc) and mmdebstrap, installed with apt if missing; the base image
#      debian:bookworm-slim made from Debian's packages with mmdebstrap if podman does not have
#      it; the binary built with `cargo build --release` (or taken from STAC_UPLOADD_BIN), and
#      the image built with `--target prebuilt` (the rust build stage cannot be pulled here).
#   2. `stac-uploadd demo` in the image: read-only root, no capabilities, no-new-privileges,
#      uid 10001, no network; a tmpfs at /tmp, where the demo keeps its temporary files.
#   3. The daemon (the image's ENTRYPOINT and CMD) with deploy/jobs.compose.toml, a data folder
#      and a state volume, against the emulator (the same image) on a podman network:
#      /healthz on a published loopback port, the image's HEALTHCHECK, the uploaded file's
#      checksum in the emulator's API, a clean stop (exit code 0, `stopped` logged).
# Everything it starts (containers, volumes, network) is removed on exit; the images are kept.
#
#   deploy/image-test.sh                      # as root, from anywhere
#   STAC_UPLOADD_BIN=path/to/stac-uploadd deploy/image-test.sh   # no cargo build
#
# IMAGE names the image built (default localhost/stac-uploadd:test). Podman's settings come
# from deploy/podman/containers.conf (CONTAINERS_CONF), nothing is configured machine-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}
IMAGE=${IMAGE:-localhost/stac-uploadd:test}
BASE=debian:bookworm-slim
NAME=stac-image-test-$$
WORK=$(mktemp -d)
START=$SECONDS

step() { printf '== image: %s (at %ds)\n' "$*" $((SECONDS - START)); }
fail() {
    printf 'image test FAILED: %s\n' "$*" >&2
    exit 1
}
# Every podman call is bounded: a hung podman must not hold CI. Without systemd podman cannot
# schedule health checks and says so ("unable to get systemd connection"): the checks are run
# with `podman healthcheck run` instead, and those messages are kept out of the output.
pm() { timeout --kill-after=10 "${PM_TIMEOUT:-120}" podman "$@"; }
# shellcheck source=deploy/podman-lib.sh
source "$ROOT/deploy/podman-lib.sh"

show_logs() {
    local c
    for c in demo emulator daemon; do
        if timeout 20 podman container exists "$NAME-$c" 2>/dev/null; then
            echo "-- podman logs $NAME-$c (last 40 lines):" >&2
            timeout 20 podman logs --tail 40 "$NAME-$c" >&2 2>&1 || true
        fi
    done
}
cleanup() {
    local rc=$?
    trap - EXIT
    if [ "$rc" -ne 0 ]; then show_logs; fi
    local c
    for c in daemon emulator demo; do
        timeout 60 podman rm -f -v -t 0 "$NAME-$c" >/dev/null 2>&1 || true
    done
    timeout 60 podman volume rm -f "$NAME-state" >/dev/null 2>&1 || true
    timeout 60 podman network rm -f "$NAME-net" >/dev/null 2>&1 || true
    if [ -n "${VOLUMES_BEFORE+set}" ]; then
        local left
        left=$(comm -13 <(printf '%s\n' "$VOLUMES_BEFORE") \
            <(timeout 60 podman volume ls -q 2>/dev/null | sort) | grep . || true)
        if [ -n "$left" ]; then
            printf 'image test: volumes left behind: %s\n' "$left" >&2
            [ "$rc" -ne 0 ] || rc=1
        fi
    fi
    rm -rf "$WORK"
    if [ "$rc" -eq 0 ]; then
        printf '== image: passed in %ds\n' $((SECONDS - START))
    else
        printf '== image: failed (exit %d) after %ds\n' "$rc" $((SECONDS - START)) >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the HTTP status of a GET (000 when nothing answers).
http_code() {
    python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}
# Prints the body of a GET answering 200 (fails otherwise).
http_body() {
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())' "$1"
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
running() { [ "$(pm inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }

# --- 1. tools, base image, binary, image --------------------------------------------------
install_podman_tools
podman --version
pm info --format 'runtime {{.Host.OCIRuntime.Name}}, storage {{.Store.GraphDriverName}}, cgroups {{.Host.CgroupManager}} {{.Host.CgroupsVersion}}, network {{.Host.NetworkBackend}}' \
    || fail "podman info (CONTAINERS_CONF=$CONTAINERS_CONF)"

# Whatever volumes exist now: cleanup checks that the test leaves no more.
VOLUMES_BEFORE=$(pm volume ls -q | sort)

# What the real debian:bookworm-slim is made of.
base_image "$BASE" '["bash"]'

if [ -n "${STAC_UPLOADD_BIN:-}" ]; then
    BIN=$STAC_UPLOADD_BIN
else
    step "cargo build --release --locked --bin stac-uploadd"
    timeout 2400 cargo build --release --locked --bin stac-uploadd || fail "cargo build --release"
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    BIN=$TARGET_DIR/release/stac-uploadd
fi
[ -x "$BIN" ] || fail "no binary at $BIN"

# The context holds the binary only, where the prebuilt target expects it.
step "podman build -f deploy/Dockerfile --target prebuilt -t $IMAGE"
mkdir -p "$WORK/context/target/release"
install -m 0755 "$BIN" "$WORK/context/target/release/stac-uploadd"
OLD_ID=$(pm image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# --format docker: the OCI format has no HEALTHCHECK (podman would drop it).
PM_TIMEOUT=900 pm build --pull=never --format docker --target prebuilt \
    -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$WORK/context" >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; fail "podman build"; }
grep -E '^\[[0-9]+/[0-9]+\] (STEP|COMMIT)' "$WORK/build.log" | cut -c1-110
# The version this build replaced (a new binary each time) would pile up untagged: remove it.
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$(pm image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    pm rmi "$OLD_ID" >/dev/null 2>&1 || true
fi
pm image inspect --format '{{json .Config}}' "$IMAGE" >"$WORK/config.json"
pm image inspect --format '{{json .HealthCheck}}' "$IMAGE" >"$WORK/health.json"
python3 - "$WORK/config.json" "$WORK/health.json" <<'EOF' || fail "the image's configuration is not the Dockerfile's"
import json, sys
config = json.load(open(sys.argv[1]))
health = json.load(open(sys.argv[2])) or {}
problems = []
if config.get("User") != "10001:10001":
    problems.append(f"User {config.get('User')!r}")
if config.get("Entrypoint") != ["stac-uploadd", "--log-format", "json"]:
    problems.append(f"Entrypoint {config.get('Entrypoint')!r}")
if config.get("Cmd") != ["run"]:
    problems.append(f"Cmd {config.get('Cmd')!r}")
if "/healthz" not in " ".join(health.get("Test") or []):
    problems.append(f"HEALTHCHECK {health!r}")
if problems:
    sys.exit("image config: " + ", ".join(problems))
print(f"image: user {config['User']}, entrypoint {config['Entrypoint']}, cmd {config['Cmd']}, "
      f"healthcheck {health['Test'][-1]!r}")
EOF

# The hardening of both runs below; --read-only-tmpfs=false: a root as read-only as Docker's
# --read-only (podman would otherwise mount tmpfs on /tmp, /var/tmp and /run by itself).
HARDENED=(--read-only --read-only-tmpfs=false --cap-drop ALL
          --security-opt no-new-privileges --user 10001:10001)

# --- 2. the demo ----------------------------------------------------------------------------
# It writes its files under a temporary folder ($TMPDIR or /tmp): a tmpfs there.
step "stac-uploadd demo: read-only root, --cap-drop ALL, no-new-privileges, uid 10001, tmpfs /tmp, no network"
PM_TIMEOUT=300 pm run --name "$NAME-demo" --network none "${HARDENED[@]}" \
    --tmpfs /tmp:rw,nosuid,nodev,size=256m "$IMAGE" demo >"$WORK/demo.log" 2>&1 \
    || { tail -40 "$WORK/demo.log"; fail "stac-uploadd demo exited non-zero"; }
grep 'demo passed' "$WORK/demo.log" || { tail -40 "$WORK/demo.log"; fail "the demo did not print 'demo passed'"; }
# -v: the anonymous volumes of the image's VOLUMEs go too.
pm rm -f -v "$NAME-demo" >/dev/null 2>>"$WORK/podman.log"

# --- 3. daemon and emulator ---------------------------------------------------------------
step "emulator and daemon on a podman network"
PASSWORD=image-test-$RANDOM$RANDOM
EMU_PORT=$(free_port)
DAEMON_PORT=$(free_port)
API=http://127.0.0.1:$EMU_PORT/api/stac/v1
pm network create "$NAME-net" >/dev/null
# The emulator as in deploy/compose.yaml: the seed file, basic auth, compose's health check
# (the image's checks the daemon's port).
pm run -d --name "$NAME-emulator" --network "$NAME-net" --network-alias emulator \
    "${HARDENED[@]}" \
    -e STAC_EMULATOR_AUTH="basic:publisher:$PASSWORD" \
    -v "$ROOT/deploy/emulator-seed.json:/seed.json:ro" \
    -p "127.0.0.1:$EMU_PORT:8080" \
    --health-cmd 'busybox wget -q -O /dev/null http://127.0.0.1:8080/api/stac/v1/collections/ch.example.radar' \
    "$IMAGE" emulator --listen 0.0.0.0:8080 --seed /seed.json >/dev/null 2>"$WORK/emulator-run.log" \
    || { cat "$WORK/emulator-run.log"; fail "podman run (emulator)"; }
code=000
for _ in $(seq 1 60); do
    code=$(http_code "$API/collections/ch.example.radar")
    [ "$code" = 200 ] && break
    running "$NAME-emulator" || fail "the emulator container exited"
    sleep 0.5
done
[ "$code" = 200 ] || fail "the emulator does not answer 200 on $API/collections/ch.example.radar (last: $code)"
echo "emulator: $API answers, seeded collection ch.example.radar"
# The health check as compose runs it (podman's timer needs systemd: run it by hand).
pm healthcheck run "$NAME-emulator" || fail "compose's health check of the emulator is not healthy"

# The job file of deploy/compose.yaml; the sample file it publishes (8 MiB: two 5 MiB parts).
mkdir -p "$WORK/data"
head -c 8388608 /dev/urandom >"$WORK/data/composite.zip"
chmod 0755 "$WORK/data"
chmod 0644 "$WORK/data/composite.zip"
CHECKSUM=1220$(sha256sum "$WORK/data/composite.zip" | cut -d' ' -f1)
pm volume create "$NAME-state" >/dev/null
pm run -d --name "$NAME-daemon" --network "$NAME-net" "${HARDENED[@]}" \
    -e STAC_PASSWORD="$PASSWORD" \
    -v "$ROOT/deploy/jobs.compose.toml:/etc/stac-uploadd/jobs.toml:ro" \
    -v "$WORK/data:/data:ro" \
    -v "$NAME-state:/var/lib/stac-uploadd" \
    -p "127.0.0.1:$DAEMON_PORT:9187" \
    "$IMAGE" >/dev/null 2>"$WORK/daemon-run.log" \
    || { cat "$WORK/daemon-run.log"; fail "podman run (daemon)"; }

code=000
for _ in $(seq 1 120); do
    code=$(http_code "http://127.0.0.1:$DAEMON_PORT/healthz")
    [ "$code" = 200 ] && break
    running "$NAME-daemon" || fail "the daemon container exited"
    sleep 0.5
done
[ "$code" = 200 ] || fail "/healthz on 127.0.0.1:$DAEMON_PORT does not answer 200 (last: $code)"
echo "daemon: /healthz answers 200 on 127.0.0.1:$DAEMON_PORT"
pm healthcheck run "$NAME-daemon" || fail "the image's HEALTHCHECK is not healthy"
echo "daemon: the image's HEALTHCHECK: healthy"

# The job runs every 30 s: wait for the asset's checksum to be the file's.
step "waiting for the job to upload composite.zip (checksum $CHECKSUM)"
found=
for _ in $(seq 1 100); do
    got=$(http_body "$API/collections/ch.example.radar/items/latest" 2>/dev/null \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["assets"]["composite.zip"].get("file:checksum", ""))' 2>/dev/null) || got=
    if [ "$got" = "$CHECKSUM" ]; then found=1; break; fi
    running "$NAME-daemon" || fail "the daemon container exited"
    sleep 1
done
[ -n "$found" ] || fail "after 100 s the emulator's asset composite.zip has file:checksum '${got:-}', not $CHECKSUM"
echo "emulator: ch.example.radar/latest/composite.zip has file:checksum $CHECKSUM"
http_body "http://127.0.0.1:$DAEMON_PORT/metrics" | grep '^stac_uploadd_runs_total' \
    || fail "no stac_uploadd_runs_total on /metrics"

step "podman stop -t 45 (SIGTERM)"
t0=$SECONDS
PM_TIMEOUT=90 pm stop -t 45 "$NAME-daemon" >/dev/null 2>>"$WORK/podman.log" \
    || { cat "$WORK/podman.log"; fail "podman stop"; }
exit_code=$(pm inspect -f '{{.State.ExitCode}}' "$NAME-daemon")
echo "daemon: stopped in $((SECONDS - t0)) s, exit code $exit_code"
[ "$exit_code" = 0 ] || fail "the daemon exited with $exit_code on SIGTERM, not 0"
pm logs "$NAME-daemon" >"$WORK/daemon.log" 2>&1 || fail "podman logs"
grep -E '"message":"stopped"' "$WORK/daemon.log" || { tail -20 "$WORK/daemon.log"; fail "the daemon's logs have no 'stopped'"; }

# The state outlives the container: a new one reads the run history from the volume.
step "stac-uploadd status in a new container on the state volume"
PM_TIMEOUT=60 pm run --rm "${HARDENED[@]}" --network none -v "$NAME-state:/var/lib/stac-uploadd" \
    "$IMAGE" status --state-dir /var/lib/stac-uploadd >"$WORK/status.log" 2>"$WORK/status.err" \
    || { cat "$WORK/status.log" "$WORK/status.err"; fail "stac-uploadd status"; }
cat "$WORK/status.log"
grep -q 'radar-composite' "$WORK/status.log" || fail "the state volume has no run of radar-composite"
