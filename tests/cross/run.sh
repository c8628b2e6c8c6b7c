#!/usr/bin/env bash
# Cross-build peercom for aarch64-unknown-linux-gnu with Debian's Rust
# toolchain and run the library's unit tests under qemu-user.
#
#   tests/cross/run.sh
#
# (a) installs missing Debian packages (bookworm, as root; uses sudo otherwise),
# (b) builds the `peercom` package (bin + lib) for aarch64 in release mode,
# (c) builds the lib's unit tests for aarch64 and runs them through the qemu
#     runner configured in .cargo/config.toml,
# (d) shows the produced binary is ARM aarch64 and prints its size.
#
# rustup's toolchain (first on PATH) has no aarch64 std, so everything here
# uses Debian's rustc-web/cargo-web via absolute paths. Output goes to a
# separate target dir (target/cross) so it never fights with the host build.
#
# Environment knobs:
#   CROSS_TARGET_DIR   target dir to use            (default: <repo>/target/cross)
#   CROSS_SKIP_INSTALL=1  do not check/install packages
#   CROSS_RUSTC, CROSS_CARGO  toolchain to use (default: /usr/bin/rustc, /usr/bin/cargo)
#   CROSS_TEST_ARGS    extra args after `--` for the test binary (e.g. a filter)
#   CROSS_TEST_TIMEOUT seconds allowed for the qemu test run (default: 300)
set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
PKG=peercom
TEST_TIMEOUT="${CROSS_TEST_TIMEOUT:-300}"
RUSTC_BIN="${CROSS_RUSTC:-/usr/bin/rustc}"
CARGO_BIN="${CROSS_CARGO:-/usr/bin/cargo}"
RUSTDOC_BIN="$(dirname "$RUSTC_BIN")/rustdoc"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

export CARGO_TARGET_DIR="${CROSS_TARGET_DIR:-$ROOT/target/cross}"
export RUSTC="$RUSTC_BIN"
if [[ -x "$RUSTDOC_BIN" ]]; then export RUSTDOC="$RUSTDOC_BIN"; fi
# Don't let an outer rustup-managed cargo/rustc leak into this build.
unset RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET RUSTUP_TOOLCHAIN || true

T_START=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }
step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------- (a) deps
PACKAGES=(
    rustc-web cargo-web libstd-rust-web-dev:arm64
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
    qemu-user-static cmake
    file ca-certificates
)

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

install_deps() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "warning: not a dpkg-based system; assuming the toolchain is installed" >&2
        return 0
    fi
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        echo "all required packages are installed"
        return 0
    fi
    echo "missing packages: ${missing[*]}"

    local SUDO=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "error: need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "adding foreign architecture arm64"
        "${SUDO[@]}" dpkg --add-architecture arm64
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

step "checking packages"
T0=$(date +%s.%N)
if [[ "${CROSS_SKIP_INSTALL:-0}" == 1 ]]; then
    echo "skipped (CROSS_SKIP_INSTALL=1)"
else
    install_deps
fi
echo "deps: $(elapsed "$T0")"

step "toolchain"
"$RUSTC_BIN" --version
"$CARGO_BIN" --version
aarch64-linux-gnu-gcc --version | head -n1
qemu-aarch64-static --version | head -n1
SYSROOT="$("$RUSTC_BIN" --print sysroot)"
if [[ ! -d "$SYSROOT/lib/rustlib/$TARGET/lib" ]]; then
    echo "error: $RUSTC_BIN has no std for $TARGET (install libstd-rust-web-dev:arm64)" >&2
    exit 1
fi
# The qemu runner (no -L, see .cargo/config.toml) uses the multiarch arm64
# loader and libc, which libstd-rust-web-dev:arm64 depends on.
if [[ ! -e /lib/ld-linux-aarch64.so.1 ]]; then
    echo "error: /lib/ld-linux-aarch64.so.1 missing (install libc6:arm64)" >&2
    exit 1
fi
echo "target dir: $CARGO_TARGET_DIR"

# ---------------------------------------------------------------- (b) build
step "building $PKG (bin + lib) for $TARGET, release"
T0=$(date +%s.%N)
"$CARGO_BIN" build --locked --release --target "$TARGET" -p "$PKG" --lib --bins
BUILD_TIME=$(elapsed "$T0")
echo "release build: $BUILD_TIME"

# ---------------------------------------------------------------- (c) tests
step "building $PKG lib unit tests for $TARGET"
T0=$(date +%s.%N)
"$CARGO_BIN" test --locked --target "$TARGET" -p "$PKG" --lib --no-run
TEST_BUILD_TIME=$(elapsed "$T0")
echo "test build: $TEST_BUILD_TIME"

step "running $PKG lib unit tests under qemu-user"
T0=$(date +%s.%N)
TEST_LOG="$(mktemp)"
trap 'rm -f "$TEST_LOG"' EXIT
# The runner (qemu-aarch64-static) comes from .cargo/config.toml. The timeout
# turns a hung emulated test binary into a failure instead of a stuck job.
set +e
# shellcheck disable=SC2086  # CROSS_TEST_ARGS is intentionally word-split
timeout -k 10 "$TEST_TIMEOUT" \
    "$CARGO_BIN" test --locked --target "$TARGET" -p "$PKG" --lib -- ${CROSS_TEST_ARGS:-} 2>&1 \
    | tee "$TEST_LOG"
rc=${PIPESTATUS[0]}
set -e
TEST_RUN_TIME=$(elapsed "$T0")
if ((rc == 124 || rc == 137)); then
    echo "error: tests did not finish within ${TEST_TIMEOUT}s under qemu (after $TEST_RUN_TIME)" >&2
    exit 1
elif ((rc != 0)); then
    echo "error: aarch64 unit tests failed (exit $rc) after $TEST_RUN_TIME" >&2
    exit "$rc"
fi
echo "test run: $TEST_RUN_TIME"

# ---------------------------------------------------------------- (d) binary
step "artifact"
BIN="$CARGO_TARGET_DIR/$TARGET/release/$PKG"
file "$BIN"
if ! file -b "$BIN" | grep -q 'ARM aarch64'; then
    echo "error: $BIN is not an ARM aarch64 executable" >&2
    exit 1
fi
SIZE=$(stat -c %s "$BIN")
STRIPPED_TMP="$(mktemp)"
aarch64-linux-gnu-strip -o "$STRIPPED_TMP" "$BIN"
SSIZE=$(stat -c %s "$STRIPPED_TMP")
rm -f "$STRIPPED_TMP"
printf 'size: %s bytes (%s), stripped: %s bytes (%s)\n' \
    "$SIZE" "$(numfmt --to=iec-i --suffix=B "$SIZE")" \
    "$SSIZE" "$(numfmt --to=iec-i --suffix=B "$SSIZE")"

step "summary"
grep -E '^test result:' "$TEST_LOG" || true
echo "release build $BUILD_TIME, test build $TEST_BUILD_TIME, test run $TEST_RUN_TIME, total $(elapsed "$T_START")"
