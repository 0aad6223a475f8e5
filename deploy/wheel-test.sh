#!/usr/bin/env bash
# The Python wheel (pyproject.toml: maturin, bindings = "bin"): built, installed into a fresh
# virtual environment without an index, the binary found on the venv's PATH, and
# `stac-uploadd check` run from there on the example job file (config/jobs.example.toml).
#
#   deploy/wheel-test.sh                           # maturin build --release (cargo reuses target/release)
#   WHEEL=path/to/stac_uploadd-*.whl deploy/wheel-test.sh   # no build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d)
START=$SECONDS
MATURIN_VERSION=1.16.0

step() { printf '== wheel: %s (at %ds)\n' "$*" $((SECONDS - START)); }
fail() {
    printf 'wheel test FAILED: %s\n' "$*" >&2
    exit 1
}
cleanup() {
    local rc=$?
    trap - EXIT
    rm -rf "$WORK"
    if [ "$rc" -eq 0 ]; then
        printf '== wheel: passed in %ds\n' $((SECONDS - START))
    else
        printf '== wheel: failed (exit %d) after %ds\n' "$rc" $((SECONDS - START)) >&2
    fi
    exit "$rc"
}
trap cleanup EXIT

if [ -z "${WHEEL:-}" ]; then
    if ! command -v maturin >/dev/null; then
        step "pip install maturin==$MATURIN_VERSION"
        timeout 600 python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            "maturin==$MATURIN_VERSION" || fail "pip install maturin==$MATURIN_VERSION"
    fi
    step "maturin build (pyproject.toml: release profile, --locked)"
    timeout 2400 maturin build --out "$WORK/wheels" || fail "maturin build"
    WHEEL=$(ls "$WORK"/wheels/stac_uploadd-*.whl)
fi
[ -f "$WHEEL" ] || fail "WHEEL=$WHEEL: no such file"
echo "wheel: $(basename "$WHEEL"), $(du -h "$WHEEL" | cut -f1)"
python3 -m zipfile -l "$WHEEL" | grep -E '\.data/scripts/stac-uploadd' \
    || fail "the wheel has no <name>.data/scripts/stac-uploadd"

step "a fresh virtual environment, pip install --no-index the wheel"
# Debian's python3 makes venvs only with python3-venv (ensurepip); installed here if missing.
python3 -c 'import ensurepip' 2>/dev/null \
    || { timeout 600 apt-get update -qq && timeout 600 apt-get install -y --no-install-recommends python3-venv >/dev/null; } \
    || fail "cannot install python3-venv"
timeout 300 python3 -m venv "$WORK/venv" || fail "python3 -m venv (Debian: apt-get install python3-venv)"
timeout 300 "$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index "$WHEEL" \
    || fail "pip install $WHEEL"
# What an activated venv (or pipx) gives: the venv's bin first on PATH.
found=$(PATH="$WORK/venv/bin:/usr/bin:/bin" command -v stac-uploadd) || fail "stac-uploadd is not on the venv's PATH"
[ "$found" = "$WORK/venv/bin/stac-uploadd" ] || fail "stac-uploadd found at $found, not in the venv"
"$found" --version || fail "$found --version"

step "stac-uploadd check --config config/jobs.example.toml (from the venv)"
# The example reads its password from the environment (a placeholder here) and names folders of
# a publisher's machine under /data, which check wants to exist: the copy has them under $WORK.
mkdir -p "$WORK/example" "$WORK/data/export"
# Every watched folder the example names (`dir = "/data/..."`), so a job added there needs nothing here.
sed -n 's#^dir = "/data/\([^"]*\)".*#\1#p' "$ROOT/config/jobs.example.toml" | while read -r d; do
    mkdir -p "$WORK/data/$d"
done
sed "s#\"/data/#\"$WORK/data/#" "$ROOT/config/jobs.example.toml" >"$WORK/example/jobs.toml"
(
    cd "$WORK/example"
    env -i PATH="$WORK/venv/bin:/usr/bin:/bin" HOME="$WORK" \
        STAC_UPLOADD_PASSWORD=placeholder \
        stac-uploadd check --config "$WORK/example/jobs.toml"
) >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log"; fail "stac-uploadd check on the example exited non-zero"; }
head -n 20 "$WORK/check.log"
