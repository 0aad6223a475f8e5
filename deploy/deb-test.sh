#!/usr/bin/env bash
# The Debian package in a Debian bookworm container with systemd as PID 1 (podman):
#   1. A bookworm image with systemd, ca-certificates and curl, made from Debian's packages with
#      mmdebstrap (no registry), kept as localhost/stac-uploadd-systemd:bookworm.
#   2. `dpkg -i` of the package, offline: every Depends is in the image already. The daemon's
#      unit is enabled and, with no /etc/stac-uploadd/jobs.toml yet, skipped (not failed); the
#      timer variant is installed disabled.
#   3. A job file the test writes (auth "none"), no password file anywhere: the unit starts
#      (where LoadCredential= alone would stop it with 243/CREDENTIALS, shown too), /healthz
#      answers, the job publishes its file to the emulator (the same binary's `stac-uploadd
#      emulator`, a second unit), `systemctl stop` ends it cleanly within TimeoutStopSec=.
#   4. stac-uploadd-once.service: one run of each job, exit 0.
#   5. `dpkg --remove` keeps the configuration and the state; `dpkg --purge` removes them too.
# The container is removed on exit; the image is kept.
#
#   deploy/deb-test.sh                         # as root; builds the package (cargo build --release, cargo deb)
#   DEB=path/to/stac-uploadd_*.deb deploy/deb-test.sh   # no build
#
# systemd's sandbox (ProtectSystem=, PrivateUsers=, ...) needs mount namespaces inside the
# container: it runs --privileged. Podman's settings come from deploy/podman/containers.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}
BASE=${DEB_TEST_IMAGE:-localhost/stac-uploadd-systemd:bookworm}
NAME=stac-deb-test-$$
WORK=$(mktemp -d)
START=$SECONDS

step() { printf '== deb: %s (at %ds)\n' "$*" $((SECONDS - START)); }
fail() {
    printf 'deb test FAILED: %s\n' "$*" >&2
    exit 1
}
# Every podman call is bounded: a hung podman or systemd must not hold CI.
pm() { timeout --kill-after=10 "${PM_TIMEOUT:-120}" podman "$@"; }
# shellcheck source=deploy/podman-lib.sh
source "$ROOT/deploy/podman-lib.sh"
# A command in the container, bounded.
in_c() { pm exec "$NAME" "$@"; }

cleanup() {
    local rc=$?
    trap - EXIT
    if [ "$rc" -ne 0 ] && timeout 20 podman container exists "$NAME" 2>/dev/null; then
        echo "-- journal of the container (last 60 lines):" >&2
        timeout 20 podman exec "$NAME" journalctl --no-pager -n 60 -o short-monotonic >&2 2>&1 || true
    fi
    timeout 60 podman rm -f -v -t 0 "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    if [ "$rc" -eq 0 ]; then
        printf '== deb: passed in %ds\n' $((SECONDS - START))
    else
        printf '== deb: failed (exit %d) after %ds\n' "$rc" $((SECONDS - START)) >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A unit's properties as KEY=VALUE lines.
show() { in_c systemctl show "$@"; }
prop() { in_c systemctl show -P "$2" "$1"; }

# --- 1. tools, image, package ---------------------------------------------------------------
install_podman_tools
# minbase plus systemd as init; curl for /healthz and the emulator's API from inside.
base_image "$BASE" '["/sbin/init"]' systemd,systemd-sysv,ca-certificates,curl

if [ -n "${DEB:-}" ]; then
    [ -f "$DEB" ] || fail "DEB=$DEB: no such file"
else
    step "cargo build --release --locked, cargo deb --no-build"
    timeout 2400 cargo build --release --locked --bin stac-uploadd || fail "cargo build --release"
    timeout 300 cargo deb --no-build --locked -o "$WORK/" >/dev/null || fail "cargo deb"
    DEB=$(ls "$WORK"/stac-uploadd_*.deb)
fi
dpkg-deb -f "$DEB" Package Version Depends

# --- 2. a container with systemd as PID 1, the package installed -----------------------------
step "container with systemd as PID 1"
# The container's own network namespace: the daemon's and the emulator's ports stay inside it.
pm run -d --name "$NAME" --privileged --systemd=always "$BASE" /sbin/init >/dev/null \
    || fail "podman run $BASE"
state=
for _ in $(seq 1 120); do
    state=$(in_c systemctl is-system-running 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.5
done
case "$state" in running | degraded) ;; *) fail "systemd in the container is '$state', not running" ;; esac
echo "systemd: $(in_c systemctl --version | head -1), $state"

step "dpkg -i $(basename "$DEB") (offline: every Depends in the image)"
pm cp "$DEB" "$NAME:/tmp/stac-uploadd.deb"
in_c dpkg -i /tmp/stac-uploadd.deb >"$WORK/dpkg-i.log" 2>&1 || { cat "$WORK/dpkg-i.log"; fail "dpkg -i"; }
in_c test -x /usr/bin/stac-uploadd || fail "no /usr/bin/stac-uploadd"
in_c stac-uploadd --version
for f in /usr/lib/systemd/system/stac-uploadd.service /usr/lib/systemd/system/stac-uploadd-once.service \
    /usr/lib/systemd/system/stac-uploadd-once.timer /etc/stac-uploadd/jobs.example.toml \
    /etc/stac-uploadd/stac-uploadd.env; do
    in_c test -f "$f" || fail "the package installed no $f"
done
in_c test ! -e /etc/stac-uploadd/jobs.toml || fail "the package must not install a job file"
[ "$(in_c systemctl is-enabled stac-uploadd.service)" = enabled ] || fail "stac-uploadd.service is not enabled"
[ "$(in_c systemctl is-enabled stac-uploadd-once.timer || true)" = disabled ] \
    || fail "stac-uploadd-once.timer is not left disabled"
# postinst started it: skipped on ConditionPathExists=, not failed.
[ "$(prop stac-uploadd.service ConditionResult)" = no ] || fail "stac-uploadd.service was not skipped for want of jobs.toml"
[ "$(prop stac-uploadd.service ActiveState)" = inactive ] || fail "stac-uploadd.service: $(show -p ActiveState,Result stac-uploadd.service)"
echo "installed: stac-uploadd.service enabled and skipped (no jobs.toml), stac-uploadd-once.timer disabled"

# --- 3. the daemon against the emulator, no password file -----------------------------------
step "the emulator as a second unit"
pm cp "$ROOT/deploy/emulator-seed.json" "$NAME:/etc/emulator-seed.json"
in_c systemd-run --unit stac-emulator -p DynamicUser=yes \
    /usr/bin/stac-uploadd emulator --listen 127.0.0.1:8080 --seed /etc/emulator-seed.json >/dev/null \
    || fail "systemd-run (emulator)"
API=http://127.0.0.1:8080/api/stac/v1
for _ in $(seq 1 60); do
    in_c curl -fsS -o /dev/null "$API/collections/ch.example.radar" 2>/dev/null && break
    sleep 0.5
done
in_c curl -fsS -o /dev/null "$API/collections/ch.example.radar" || fail "the emulator does not answer on $API"

# 8 MiB: two 5 MiB parts. Under /srv/data, the unit's ReadOnlyPaths=; world-readable, as the
# dynamic user needs.
head -c 8388608 /dev/urandom >"$WORK/composite.zip"
CHECKSUM=1220$(sha256sum "$WORK/composite.zip" | cut -d' ' -f1)
in_c mkdir -p /srv/data
pm cp "$WORK/composite.zip" "$NAME:/srv/data/composite.zip"
in_c chmod 0644 /srv/data/composite.zip
cat >"$WORK/jobs.toml" <<'EOF'
# Written by deploy/deb-test.sh: no state_dir (the unit's StateDirectory=), no password.
[server]
url = "http://127.0.0.1:8080/api/stac/v1"

[server.auth]
type = "none"

[defaults]
part_size = "5MiB"

[[job]]
name = "radar-composite"
collection = "ch.example.radar"
item = "latest"
asset = "composite.zip"
file = "/srv/data/composite.zip"
schedule = "*/5 * * * * *"
EOF
pm cp "$WORK/jobs.toml" "$NAME:/etc/stac-uploadd/jobs.toml"
in_c chmod 0644 /etc/stac-uploadd/jobs.toml
in_c test ! -e /etc/stac-uploadd/stac-password || fail "a password file exists: the case is without one"
in_c stac-uploadd check --config /etc/stac-uploadd/jobs.toml >"$WORK/check.log" 2>&1 \
    || { cat "$WORK/check.log"; fail "stac-uploadd check"; }

# What the unit's SetCredential= fallback is for: without it, no password file means
# 243/CREDENTIALS before the daemon runs. Restart=no: Restart=on-failure would try again in 5 s.
step "without SetCredential= (a drop-in resets it): 243/CREDENTIALS"
in_c mkdir -p /etc/systemd/system/stac-uploadd.service.d
printf '[Service]\nSetCredential=\nRestart=no\n' >"$WORK/no-fallback.conf"
pm cp "$WORK/no-fallback.conf" "$NAME:/etc/systemd/system/stac-uploadd.service.d/no-fallback.conf"
in_c systemctl daemon-reload
in_c systemctl start stac-uploadd.service 2>/dev/null && fail "the unit started without its credential fallback"
status=$(prop stac-uploadd.service ExecMainStatus)
[ "$status" = 243 ] || fail "without the fallback: ExecMainStatus=$status, expected 243 (CREDENTIALS)"
echo "without the fallback: $(show -p Result,ExecMainStatus stac-uploadd.service | tr '\n' ' ')"
in_c rm -r /etc/systemd/system/stac-uploadd.service.d
in_c systemctl daemon-reload
in_c systemctl reset-failed stac-uploadd.service

step "systemctl start stac-uploadd (Type=notify: returns at READY=1)"
in_c timeout 120 systemctl start stac-uploadd.service \
    || fail "systemctl start stac-uploadd: $(show -p Result,ExecMainStatus stac-uploadd.service | tr '\n' ' ')"
[ "$(prop stac-uploadd.service ActiveState)" = active ] || fail "stac-uploadd.service is not active"
code=000
for _ in $(seq 1 60); do
    code=$(in_c curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9187/healthz || true)
    [ "$code" = 200 ] && break
    sleep 0.5
done
[ "$code" = 200 ] || fail "/healthz on 127.0.0.1:9187 answers $code, not 200"
echo "daemon: active, /healthz answers 200"

step "waiting for the job to publish composite.zip (checksum $CHECKSUM)"
found=
for _ in $(seq 1 90); do
    if in_c curl -fsS "$API/collections/ch.example.radar/items/latest" 2>/dev/null | grep -q "$CHECKSUM"; then
        found=1
        break
    fi
    [ "$(prop stac-uploadd.service ActiveState)" = active ] || fail "stac-uploadd.service stopped"
    sleep 1
done
[ -n "$found" ] || fail "after 90 s the emulator's item ch.example.radar/latest has no asset with $CHECKSUM"
echo "emulator: composite.zip published with file:checksum $CHECKSUM"

step "systemctl stop stac-uploadd"
stop_timeout_us=$(prop stac-uploadd.service TimeoutStopUSec)
t0=$SECONDS
in_c timeout 200 systemctl stop stac-uploadd.service || fail "systemctl stop"
took=$((SECONDS - t0))
result=$(prop stac-uploadd.service Result)
exit_status=$(prop stac-uploadd.service ExecMainStatus)
echo "daemon: stopped in ${took} s (TimeoutStopSec=$stop_timeout_us), Result=$result ExecMainStatus=$exit_status"
[ "$result" = success ] && [ "$exit_status" = 0 ] \
    || fail "the stop was not clean: Result=$result ExecMainStatus=$exit_status"
in_c journalctl -u stac-uploadd.service --no-pager -o cat | grep -q '"message":"stopped"' \
    || fail "the journal has no 'stopped' from the daemon"
in_c test -d /var/lib/private/stac-uploadd || fail "no state folder /var/lib/private/stac-uploadd"

# --- 4. the timer variant's service: one run ------------------------------------------------
step "systemctl start stac-uploadd-once.service (each job once)"
in_c timeout 300 systemctl start stac-uploadd-once.service \
    || fail "stac-uploadd-once.service: $(show -p Result,ExecMainStatus stac-uploadd-once.service | tr '\n' ' ')"
[ "$(prop stac-uploadd-once.service Result)" = success ] || fail "stac-uploadd-once.service did not succeed"
in_c journalctl -u stac-uploadd-once.service --no-pager -o cat | grep radar-composite | tail -1

# --- 5. remove, purge -----------------------------------------------------------------------
step "dpkg --remove: configuration and state stay"
in_c systemctl stop stac-emulator.service
in_c dpkg --remove stac-uploadd >"$WORK/dpkg-r.log" 2>&1 || { cat "$WORK/dpkg-r.log"; fail "dpkg --remove"; }
in_c test ! -e /usr/bin/stac-uploadd || fail "remove left /usr/bin/stac-uploadd"
in_c test ! -e /usr/lib/systemd/system/stac-uploadd.service || fail "remove left the unit"
for f in /etc/stac-uploadd/jobs.example.toml /etc/stac-uploadd/stac-uploadd.env /etc/stac-uploadd/jobs.toml; do
    in_c test -f "$f" || fail "remove took $f (only purge may)"
done
in_c test -d /var/lib/private/stac-uploadd || fail "remove took the state folder (only purge may)"

step "dpkg --purge: configuration and state go"
in_c dpkg --purge stac-uploadd >"$WORK/dpkg-p.log" 2>&1 || { cat "$WORK/dpkg-p.log"; fail "dpkg --purge"; }
for f in /etc/stac-uploadd /var/lib/private/stac-uploadd /var/lib/stac-uploadd \
    /etc/systemd/system/multi-user.target.wants/stac-uploadd.service; do
    in_c test ! -e "$f" || fail "purge left $f"
done
in_c dpkg-query -W -f='${Status}\n' stac-uploadd 2>/dev/null | grep -q 'ok installed' \
    && fail "dpkg still lists stac-uploadd: $(in_c dpkg-query -W -f='${Status}' stac-uploadd)"
[ "$(prop stac-uploadd.service LoadState)" = not-found ] || fail "systemd still knows stac-uploadd.service"
echo "purged: binary, units, /etc/stac-uploadd and the state folder are gone"
