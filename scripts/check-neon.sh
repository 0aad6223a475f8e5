#!/usr/bin/env bash
# The NEON MD5 lanes (crates/stac-upload/src/md5x/neon.rs) checked on an x86_64 Debian machine: the harness
# tools/neon-check (the real md5x module, its unit tests and a differential test against md-5)
# is cross-built for aarch64-unknown-linux-gnu with Debian's rustc (rustc-web, and its arm64
# standard library through multiarch), linked with aarch64-linux-gnu-gcc and run under
# qemu-aarch64-static; in a debug build (debug assertions) and in a release build (what ships).
# Installs what is missing with apt-get (root or sudo). Exits non-zero on any failure.
#
#   scripts/check-neon.sh     APT_TIMEOUT=900 bounds each apt-get call, TEST_TIMEOUT=900 each
#                             test run (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
TARGET=aarch64-unknown-linux-gnu
APT_TIMEOUT=${APT_TIMEOUT:-900}
HARNESS=tools/neon-check

die() { echo "check-neon: $*" >&2; exit 1; }
now() { date +%s; }
run() { echo "+ $*"; "$@"; }

SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "not root and no sudo: cannot install packages"
    SUDO=(sudo)
fi
apt() {
    DEBIAN_FRONTEND=noninteractive run timeout --kill-after=30 "$APT_TIMEOUT" \
        "${SUDO[@]}" apt-get -y -q -o Dpkg::Use-Pty=0 "$@" \
        || die "apt-get $1 failed or took over ${APT_TIMEOUT}s"
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

echo "== packages"
t0=$(now)
command -v dpkg >/dev/null || die "needs a Debian (dpkg, apt-get) machine"
[ "$(dpkg --print-architecture)" = amd64 ] || die "written for an amd64 host, not $(dpkg --print-architecture)"
# libc6:arm64 (multiarch, also pulled in by the arm64 std) is the runtime the tests run on;
# libc6-dev-arm64-cross is what the cross linker links against.
PACKAGES=(rustc-web libstd-rust-web-dev libstd-rust-web-dev:arm64 libc6:arm64
          gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
command -v cargo >/dev/null || PACKAGES+=(cargo-web)
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        run "${SUDO[@]}" dpkg --add-architecture arm64
    fi
    apt update
    apt install --no-install-recommends "${missing[@]}"
else
    echo "all installed: ${PACKAGES[*]}"
fi
host_v=$(dpkg-query -W -f='${Version}' libstd-rust-web-dev:amd64)
arm_v=$(dpkg-query -W -f='${Version}' libstd-rust-web-dev:arm64)
[ "$host_v" = "$arm_v" ] || die "libstd-rust-web-dev amd64 $host_v and arm64 $arm_v differ"
t_apt=$(( $(now) - t0 ))
echo "packages: ${t_apt}s"

# Debian's rustc-web: its own binary (the rustup rustc on PATH has no aarch64 std here).
RUSTC=$(dpkg -L rustc-web | grep -E '/bin/rustc(-web)?$' | head -n1)
[ -x "$RUSTC" ] || die "no rustc binary in package rustc-web"
"$RUSTC" --print target-libdir --target "$TARGET" >/dev/null \
    || die "$RUSTC has no $TARGET standard library (libstd-rust-web-dev:arm64)"
STDLIB=$("$RUSTC" --print target-libdir --target "$TARGET")
ls "$STDLIB"/libstd-*.rlib >/dev/null 2>&1 || die "no libstd rlib in $STDLIB"
if command -v cargo >/dev/null; then CARGO=cargo; else CARGO=$(dpkg -L cargo-web | grep -E '/bin/cargo$' | head -n1); fi
export RUSTC
export CARGO_TARGET_DIR="$PWD/$HARNESS/target"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# No `-L /usr/aarch64-linux-gnu`: qemu would take that sysroot's ld.so (libc6-arm64-cross) while
# ld.so finds the multiarch libc.so.6 (libc6:arm64, another build), and the first
# pthread_create loops forever on their mismatched private data. Without a prefix qemu takes
# /lib/ld-linux-aarch64.so.1, of the same package as the libc it loads.
[ -e /lib/ld-linux-aarch64.so.1 ] || die "no /lib/ld-linux-aarch64.so.1 (libc6:arm64)"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
unset STAC_UPLOADD_MD5 RUSTFLAGS CARGO_BUILD_TARGET
echo "rustc: $RUSTC ($("$RUSTC" --version)), std for $TARGET in $STDLIB"
echo "cargo: $(command -v "$CARGO") ($("$CARGO" --version))"
echo "linker: $(command -v aarch64-linux-gnu-gcc) ($(aarch64-linux-gnu-gcc -dumpversion))"
echo "runner: $CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER ($(qemu-aarch64-static --version | head -n1))"

# Dependencies from the local registry cache when it has them (their versions are pinned by the
# committed Cargo.lock); online otherwise.
offline=()
"$CARGO" fetch --locked --offline --manifest-path "$HARNESS/Cargo.toml" >/dev/null 2>&1 && offline=(--offline)

t_build=0
t_test=0
for profile in dev release; do
    # --lib: the unit tests (no doctests: rustdoc would be rustup's, without an aarch64 std).
    flags=(--locked "${offline[@]}" --manifest-path "$HARNESS/Cargo.toml" --target "$TARGET" --lib)
    [ "$profile" = release ] && flags+=(--release)
    echo "== build ($profile)"
    t0=$(now)
    run "$CARGO" test "${flags[@]}" --no-run
    t_build=$(( t_build + $(now) - t0 ))
    echo "== tests under qemu ($profile)"
    t0=$(now)
    log=$(mktemp)
    # The test binary's names and its result, streamed and kept.
    set +e
    # Bounded: a hang under qemu fails the check instead of stalling CI.
    timeout --kill-after=30 "${TEST_TIMEOUT:-900}" "$CARGO" test "${flags[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    t_test=$(( t_test + $(now) - t0 ))
    [ "$rc" = 0 ] || die "tests failed ($profile), exit $rc"
    # Fail loudly if the NEON tests did not run at all (a filter, a cfg that hid them).
    for t in md5x::tests::the_neon_kernel_runs tests::neon_is_the_backend_an_aarch64_build_chooses \
             tests::this_is_the_aarch64_build; do
        grep -qE "^test $t \.\.\. ok$" "$log" || die "test $t did not run and pass ($profile)"
    done
    rm -f "$log"
done
echo "== neon-check passed: apt ${t_apt}s, build ${t_build}s, tests under qemu ${t_test}s"
