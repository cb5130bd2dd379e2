#!/usr/bin/env bash
# Fuzzing (issue 5): builds the cargo-fuzz targets in server/fuzz, seeds the
# `decode` corpus from the conformance vectors, runs each target for a
# bounded time and prints libFuzzer's execution count per target. Fails if a
# target crashes (the reproducer stays in server/fuzz/artifacts/TARGET/;
# replay it with `cargo fuzz run TARGET ARTIFACT` or `cargo test` in
# server/fuzz).
#
# Env: FUZZ_SECONDS (per target, default 60), FUZZ_TARGETS (default: all),
# FUZZ_REPLAY=1 to also run server/fuzz's `cargo test` (seed corpus and
# random plans without libFuzzer).
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, sancov passes);
# this project builds on stable Rust, so RUSTC_BOOTSTRAP=1 unlocks them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
CARGO_FUZZ_VERSION=0.13.2
seconds="${FUZZ_SECONDS:-60}"
read -r -a targets <<<"${FUZZ_TARGETS:-decode core_sequence}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

cd "$root/server"
# the fuzz crate's own lock file must be current (cargo fuzz has no --locked)
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
python3 fuzz/seed_corpus.py "$root/vectors" fuzz/corpus/decode
mkdir -p fuzz/corpus/core_sequence

if [ "${FUZZ_REPLAY:-0}" = 1 ]; then
  (cd fuzz && cargo test --release --locked)
fi

start=$SECONDS
cargo fuzz build
echo "fuzz build: $((SECONDS - start)) s"

# core_sequence reads whole command sequences: let inputs be long at once
declare -A extra=([core_sequence]="-max_len=1024 -len_control=0")
passed=0
failed=()
for t in "${targets[@]}"; do
  log="$(mktemp)"
  start=$SECONDS
  # shellcheck disable=SC2086
  if cargo fuzz run "$t" -- -max_total_time="$seconds" -print_final_stats=1 \
      ${extra[$t]:-} >"$log" 2>&1; then
    status=ok
    passed=$((passed + 1))
  else
    status=CRASHED
    failed+=("$t")
    grep -m1 -A12 'panicked at' "$log" || true
    grep -E -A3 '^(Reproduce|Minimize)|SUMMARY|ERROR: libFuzzer' "$log" || true
  fi
  execs="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)"
  if [ -z "$execs" ]; then
    execs="$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1 || true)"
  fi
  corpus="$(find "fuzz/corpus/$t" -type f | wc -l)"
  echo "fuzz: $t: ${execs:-?} executions in $((SECONDS - start)) s, corpus $corpus inputs: $status"
  rm -f "$log"
done

echo "fuzz: ${passed} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
