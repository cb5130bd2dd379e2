#!/usr/bin/env bash
# Benchmark smoke run (ci/test.sh calls it): a few seconds of each `bench`
# mode against our server, so the load tool cannot rot. Checks that every
# mode completes work with zero errors; the figures themselves are not
# judged here (ci/bench.sh does the real, release-mode run).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
server="$target/debug/wormhole-mailbox"
tool="$target/debug/wormhole-mailbox-conformance"
# a no-op after CI's build stage; rebuilds binaries older than the sources
cargo build --locked -p wormhole-mailbox-server --bin wormhole-mailbox \
  -p wormhole-mailbox-harness --bin wormhole-mailbox-conformance
port="$(free_port)"
start_server "$port" "$work/server.log" \
  "$server" --port "127.0.0.1:$port" --channel-db "$work/relay.sqlite"
passed=0
failed=0
run() {
  local name="$1"; shift
  local json
  if json="$("$tool" bench "$@" --url "ws://127.0.0.1:$port/v1" --server-pid "$server_pid" --json)" &&
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["completed"] > 0 and r["error_total"] == 0 else 1)' "$json"; then
    echo "bench smoke $name: ok"
    passed=$((passed + 1))
  else
    echo "bench smoke $name: FAILED: $json"
    failed=$((failed + 1))
  fi
}
run pairs pairs --concurrency 4 --duration 2
run churn churn --concurrency 4 --duration 2
run idle idle --concurrency 20 --count 200 --hold 0.5 --duration 10
echo "bench-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
