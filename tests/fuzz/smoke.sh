#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target in fuzz/ and runs each for FUZZ_SECONDS
# (default 15). Fails if any target crashes; crash inputs land in fuzz/artifacts/<target>/.
#
# Works on the stable toolchain: cargo-fuzz's default AddressSanitizer build passes
# -Zsanitizer=address, which stable rustc accepts with RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER=none
# needs no -Z flag at all and runs about 3-4x faster (but switching rebuilds everything).
#
#   tests/fuzz/smoke.sh                      # 15 s per target
#   FUZZ_SECONDS=300 tests/fuzz/smoke.sh     # longer run
#   FUZZ_SANITIZER=none tests/fuzz/smoke.sh  # no ASan
set -euo pipefail

secs="${FUZZ_SECONDS:-15}"
san="${FUZZ_SANITIZER:-address}"
cd "$(dirname "$0")/../../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cargo fuzz build -s "$san"

failed=()
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    # Checked-in seeds (read-only); new finds go to corpus/<target>, which is not versioned.
    seeds=()
    if [[ -d "seeds/$t" ]]; then
        seeds=("seeds/$t")
    fi
    echo "=== $t: ${secs}s"
    if ! cargo fuzz run -s "$san" "$t" "corpus/$t" ${seeds[@]+"${seeds[@]}"} -- \
        -max_total_time="$secs" -print_final_stats=1; then
        failed+=("$t")
        echo "!!! $t crashed; inputs:" >&2
        ls -1 "artifacts/$t" >&2 || true
    fi
done

if ((${#failed[@]})); then
    echo "fuzz smoke FAILED: ${failed[*]} (reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>)" >&2
    exit 1
fi
echo "fuzz smoke passed: every target ran ${secs}s without a crash"
