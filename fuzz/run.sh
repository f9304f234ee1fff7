#!/usr/bin/env bash
# Short, time-bounded fuzz run of every cargo-fuzz target, for CI: builds all targets once, runs
# each for FUZZ_SECONDS (default 60) on a corpus grown from the committed seeds, and fails if any
# target finds a crash (the input and the log are left in fuzz/artifacts/<target>/).
#
#   FUZZ_SECONDS=60 bash fuzz/run.sh           # all targets
#   FUZZ_SECONDS=600 bash fuzz/run.sh token    # one target, longer
#
# Environment: FUZZ_SECONDS (per target), FUZZ_SANITIZER (address by default; none is faster).
# Stable Rust is enough: RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz needs.
set -euo pipefail

cd "$(dirname "$0")"
fuzz_dir="$PWD"
export RUSTC_BOOTSTRAP=1

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
all_targets=(token forwarded_uri config jwks credentials)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

max_len() {
    case "$1" in
        token) echo 16384 ;;
        forwarded_uri) echo 4096 ;;
        # Room for the commented deploy/config.example.yaml (about 14 KB) to grow.
        config) echo 32768 ;;
        # A JWKS at the 100-key cap is about 70 KB.
        jwks) echo 65536 ;;
        # A certificate chain in a header, URL-encoded.
        credentials) echo 16384 ;;
        *) echo "unknown target $1" >&2; return 1 ;;
    esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# One build for all targets: optimised, with debug assertions (overflow checks and
# debug_assert! are invariants too), the sanitizer chosen above.
build=(--release --debug-assertions --sanitizer "$sanitizer")
started=$SECONDS
cargo fuzz build "${build[@]}"
echo "fuzz: built ${#all_targets[@]} targets in $((SECONDS - started))s (sanitizer $sanitizer)"

failed=()
for target in "${targets[@]}"; do
    len="$(max_len "$target")"
    corpus="$fuzz_dir/corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    # The seeds join the corpus every run; the corpus keeps what earlier runs found.
    cp -f seeds/"$target"/* "$corpus"/
    if [ "$target" = config ]; then
        # The sample config as it is today, beside the committed variants of it.
        cp -f ../deploy/config.example.yaml "$corpus"/deploy-config.example.yaml
    fi
    log="$fuzz_dir/artifacts/$target/run.log"
    dict=()
    if [ -f "dicts/$target.dict" ]; then
        dict=(-dict="$fuzz_dir/dicts/$target.dict")
    fi
    echo "fuzz: $target for ${seconds}s (max_len $len)"
    status=0
    # -timeout: one input taking longer than 10 s is a finding (a hang), not a slow machine.
    # -rss_limit_mb: a leak or an unbounded allocation fails the run instead of the machine.
    # The wall-clock bound outside libFuzzer is a safety net, never the expected way out.
    timeout --kill-after=30 "$((seconds + 300))" \
        cargo fuzz run "${build[@]}" "$target" "$corpus" -- \
        -max_total_time="$seconds" -max_len="$len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
    # Either "#N DONE cov: ..." (the run finished) or the last status line before a crash.
    summary="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    execs="$(grep -E '^stat::number_of_executed_units' "$log" | tail -n 1 | awk '{print $2}' || true)"
    echo "fuzz: $target: ${summary:-no status line} (executed units: ${execs:-?})"
    if [ "$status" -ne 0 ]; then
        echo "fuzz: $target FAILED (exit $status); the end of $log:" >&2
        tail -n 60 "$log" >&2
        ls artifacts/"$target"/ | grep -E '^(crash|leak|timeout|oom|slow-unit)-' >&2 || true
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: findings in: ${failed[*]} (reproduce: see fuzz/README.md)" >&2
    exit 1
fi
echo "fuzz: no findings in ${targets[*]}"
