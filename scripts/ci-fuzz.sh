#!/usr/bin/env bash
# CI: build every fuzz target (fuzz/, its own workspace) and run each briefly on its seed corpus,
# then replay the kept regression inputs. A crash fails the step; libFuzzer writes the input to
# fuzz/artifacts/<target>/, and it becomes a regression test (see fuzz/README.md).
#   FUZZ_SECONDS=20 scripts/ci-fuzz.sh      # seconds per target (default 20)
#   FUZZ_PROFILE=release scripts/ci-fuzz.sh # optimised build for long runs (default: dev, which
#                                           # builds in a fraction of the time; CI runs seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
case "${FUZZ_PROFILE:-dev}" in
    dev) profile=(--dev) ;;
    release) profile=() ;;
    *) echo "FUZZ_PROFILE must be dev or release" >&2; exit 2 ;;
esac

if ! command -v cargo-fuzz >/dev/null; then
    cargo install --locked cargo-fuzz
fi
# cargo-fuzz needs nightly flags; the installed stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1

cd fuzz
started=$(date +%s)
# No sanitizer: the code under test is safe Rust; libFuzzer still stops on any panic, and the
# build stays within the CI budget.
cargo fuzz build "${profile[@]}" --sanitizer none
echo "ci-fuzz: built in $(( $(date +%s) - started )) s"

log=$(mktemp)
for target in $(cargo fuzz list); do
    corpus=$(mktemp -d)
    # Regression inputs: every one must pass before any new fuzzing.
    if [ -d regressions/"$target" ]; then
        cargo fuzz run "${profile[@]}" --sanitizer none "$target" regressions/"$target" -- -runs=0 >"$log" 2>&1 \
            || { tail -n 40 "$log"; echo "ci-fuzz: $target fails a regression input" >&2; exit 1; }
    fi
    # New inputs go to a scratch directory; the seed corpus in the repo is only read.
    if ! cargo fuzz run "${profile[@]}" --sanitizer none "$target" "$corpus" corpus/"$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "ci-fuzz: $target crashed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs=$(grep -Eo "stat::number_of_executed_units: *[0-9]+" "$log" | grep -Eo "[0-9]+$" || echo "?")
    rm -rf "$corpus"
    echo "ci-fuzz: $target ok ($runs runs in ${seconds} s)"
done
rm -f "$log"
echo "ci-fuzz: all targets ran ${seconds} s each; total $(( $(date +%s) - started )) s"
