# Set-up shared by ci/bench.sh and ci/bench-smoke.sh, which source it right
# after `set -euo pipefail`:
#   . "$(dirname "$0")/lib.sh"
# Sourcing it sets `root` (the repository, made the working directory),
# `target` (CARGO_TARGET_DIR or target/) and `work` (a scratch directory),
# and arranges that at exit the server is stopped and `work` removed.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d)"
server_pid=""

# free_port: prints a TCP port that is free on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT: waits until 127.0.0.1:PORT accepts connections (at most
# 15 s); non-zero if it never does.
wait_port() {
  local port="$1"
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server on port $port did not start" >&2
  return 1
}

# start_server PORT LOG COMMAND...: runs COMMAND in the background (output to
# LOG) as the server (`server_pid`) and waits until it listens on PORT.
start_server() {
  local port="$1" log="$2"; shift 2
  "$@" > "$log" 2>&1 &
  server_pid=$!
  wait_port "$port"
}

# stop_server: stops the server, if one runs (SIGTERM, then waits for it).
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}

cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
