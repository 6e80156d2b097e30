#!/usr/bin/env bash
# Run every fuzz target. `fuzz/run.sh 30` runs each for 30 s (the smoke run of
# scripts/test.sh); `fuzz/run.sh --runs 10000000` runs each for ten million inputs (the
# campaign recorded in docs/fuzzing.md). Targets may be named after the budget.
# Needs cargo-fuzz (installed here when missing) and a nightly toolchain (or, failing that,
# the stable one with RUSTC_BOOTSTRAP=1). Coverage only, no AddressSanitizer: the code is
# safe Rust, and the C it links (aws-lc, SQLite) is not instrumented anyway.
set -euo pipefail
cd "$(dirname "$0")"
budget=${1:-30}
shift || true
if [ "$budget" = --runs ]; then
  limit=(-runs="$1")
  shift
else
  limit=(-max_total_time="$budget")
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(path jwks jws policy lambda_event authorizer_event bodies)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
"${fuzz[@]}" build -O -s none
status=0
for t in "${targets[@]}"; do
  # New inputs go to a scratch directory: the committed corpus is only read, unless
  # FUZZ_GROW_CORPUS=1 (the campaign; then `cargo fuzz cmin` before committing).
  scratch=$(mktemp -d)
  [ "${FUZZ_GROW_CORPUS:-0}" = 1 ] && scratch_out=corpus/$t || scratch_out=$scratch
  started=$(date +%s)
  if "${fuzz[@]}" run -O -s none "$t" "$scratch_out" "corpus/$t" -- \
      "${limit[@]}" -print_final_stats=1 >"$scratch.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch.log" | grep -o '[0-9]*$')
    echo "fuzz $t: ${runs:-?} inputs in $(( $(date +%s) - started )) s, no crash"
  else
    echo "fuzz $t: FAILED (input in fuzz/artifacts/$t/):"
    # A crash's message, or else (a build that failed, a timeout) the log's end.
    grep -E -A8 'panicked|ERROR|^error' "$scratch.log" | head -30 || tail -20 "$scratch.log"
    status=1
  fi
  rm -rf "$scratch" "$scratch.log"
done
exit $status
