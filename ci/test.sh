#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls it).
# Installs what it needs from the package registries (Rust crates, a Python
# virtualenv with the pinned reference server and client), then runs every
# stage, continuing past failures so one run shows everything, and exits
# non-zero if any stage failed.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TERM_COLOR=never
log="$(mktemp -d)/ci.log"
passed=0
failed_stages=()

stage() {
  local name="$1"; shift
  local start=$SECONDS
  echo "::: $name"
  if "$@" 2>&1 | tee -a "$log"; then
    echo "::: $name ok ($((SECONDS - start)) s)"
  else
    echo "::: $name FAILED ($((SECONDS - start)) s)"
    failed_stages+=("$name")
  fi
}

stage "python virtualenv (pinned reference packages)" bash ci/setup-venv.sh
stage "format" cargo fmt --all -- --check
stage "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
stage "cargo test (unit, store contract, end-to-end, conformance, interop, restart)" \
  cargo test --workspace --locked
stage "build binaries" cargo build --workspace --locked --bins
if [ -x ci/conformance.sh ]; then
  stage "conformance vectors vs the Python server 0.8.0 and ours" bash ci/conformance.sh
fi
if [ -x ci/interop-python.sh ]; then
  stage "interop: real Python wormhole client through our server" \
    bash ci/interop-python.sh "$root/target/debug/wormhole-mailbox" "$root/.venv"
fi
if [ -x ci/python-bindings.sh ]; then
  stage "python bindings: wheel, stub check, pytest" bash ci/python-bindings.sh
fi
if [ -x ci/fuzz.sh ]; then
  stage "fuzzing (cargo-fuzz, bounded)" bash ci/fuzz.sh
fi
if [ -x ci/bench-smoke.sh ]; then
  stage "benchmark smoke run" bash ci/bench-smoke.sh
fi

# Totals from every runner's own summary lines.
for n in $(grep -oE 'test result: (ok|FAILED)\. [0-9]+ passed' "$log" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); do
  passed=$((passed + n))
done
for n in $(grep -oE '^(=+ |conformance: |fuzz: |interop: )[0-9]+ passed' "$log" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); do
  passed=$((passed + n))
done
echo
if [ ${#failed_stages[@]} -eq 0 ]; then
  echo "all stages passed"
  echo "ci: $passed passed, 0 failed"
  exit 0
fi
printf 'failed stage: %s\n' "${failed_stages[@]}"
echo "ci: $passed passed, ${#failed_stages[@]} failed"
exit 1
