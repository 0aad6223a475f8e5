#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets) for SECONDS (default 20), starting from the
# committed inputs: fuzz/seeds/<target> (written by hand: real answers, job files, and each input
# that once broke an invariant; the config target also reads config/) and fuzz/corpus/<target> (what long runs kept, minimised):
#   scripts/fuzz.sh            # the short run CI does
#   scripts/fuzz.sh 1800 keep  # a long run that adds what it finds to fuzz/corpus (then minimised)
# FUZZ_TARGETS picks targets (default: config answers planner lanes names tiff_header
# geojson_bbox).
# Without `keep`, new inputs go to a temporary folder and the committed corpus is only read.
# A crash stops the script; its input is in fuzz/artifacts/<target>/ (add it to the corpus once
# fixed: `cargo test --test it properties::the_fuzz_corpus_holds` replays every corpus file).
# cargo-fuzz needs unstable rustc flags (-Zsanitizer=address): the machine's one stable
# toolchain gets them with RUSTC_BOOTSTRAP=1, so no nightly is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
keep=${2:-}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
for target in ${FUZZ_TARGETS:-config answers planner lanes names tiff_header geojson_bbox}; do
    corpus=fuzz/corpus/$target
    # A target new enough to have no committed corpus yet starts from its seeds alone.
    mkdir -p "$corpus"
    if [ "$keep" = keep ]; then
        out=$corpus
        read_only=(fuzz/seeds/$target)
    else
        out=$(mktemp -d)
        read_only=("$corpus" fuzz/seeds/$target)
    fi
    # The project's own job files (config/) seed the config target as they are.
    if [ "$target" = config ]; then read_only+=(config); fi
    echo "== fuzz $target for ${seconds}s (corpus: $(ls "$corpus" | wc -l) inputs, seeds: $(ls fuzz/seeds/$target | wc -l))"
    log=$(mktemp)
    if ! cargo fuzz run --fuzz-dir fuzz "$target" "$out" "${read_only[@]}" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz $target FAILED: the input is in fuzz/artifacts/$target/"
        exit 1
    fi
    grep -E '^#[0-9]+ +DONE|^Done|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log"
    rm -f "$log"
    if [ "$keep" = keep ]; then
        cargo fuzz cmin --fuzz-dir fuzz "$target" "$corpus" >/dev/null 2>&1
        echo "corpus $target: $(ls "$corpus" | wc -l) inputs after cmin"
    else
        rm -rf "$out"
    fi
done
