#!/usr/bin/env bash
# Runs every conformance vector through the harness binary against
# (1) the pinned Python server 0.8.0, proving the vectors describe the real
# protocol, and (2) our server binary, both launched by the harness
# (--server-cmd), so launch/restart vectors run too. Prune vectors need
# --prune-interval, and permissions vectors the permissions extension
# (--permissions, --hashcash-bits), which only our server has: the Python
# run skips both.
# Usage: ci/conformance.sh [TARGET_DIR]   (default: target/debug)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/debug}"
venv="$root/.venv"
out="${CONFORMANCE_OUT:-$(mktemp -d)}"
harness="$bin/wormhole-mailbox-conformance"
status=0

echo "--- Python server 0.8.0 ($venv/bin/twist)"
if "$harness" --vectors "$root/vectors" -j 4 -q \
    --server-cmd "$venv/bin/twist wormhole-mailbox --port=tcp:{port}:interface=127.0.0.1 --channel-db={db}" \
    --json "$out/python.json" --junit "$out/python.junit.xml"; then
  echo "conformance vs Python 0.8.0: OK"
else
  echo "conformance vs Python 0.8.0: FAILED"; status=1
fi

echo "--- our server ($bin/wormhole-mailbox)"
if "$harness" --vectors "$root/vectors" -j 4 -q --capability prune --capability permissions \
    --server-cmd "$bin/wormhole-mailbox --port=tcp:{port}:interface=127.0.0.1 --channel-db={db}" \
    --json "$out/rust.json" --junit "$out/rust.junit.xml"; then
  echo "conformance vs ours: OK"
else
  echo "conformance vs ours: FAILED"; status=1
fi

for f in python rust; do
  python3 - "$out/$f.json" "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
counted = [r for r in d["results"] if r["class"] != "informational"]
p = sum(r["outcome"] == "pass" for r in counted)
f = sum(r["outcome"] == "fail" for r in counted)
s = sum(r["outcome"] == "skip" for r in counted)
print(f"conformance: {p} passed, {f} failed, {s} skipped ({sys.argv[2]}; informational not counted)")
PY
done
echo "reports in $out"
exit $status
