#!/usr/bin/env bash
# Side-by-side benchmark: the same loads (`wormhole-mailbox-conformance
# bench`) against the pinned Python server 0.8.0 (on-disk and in-memory
# channel DB) and against ours (default durable configuration, on-disk;
# --power-loss-durable; and a `:memory:` DB, which shows what the server
# costs without any storage I/O), all on 127.0.0.1, then writes BENCHMARKS.md.
# The timed loads run in rounds, each round running every server and
# configuration in turn, and the report gives the median of each figure
# over the rounds: on this VM the same binary's CPU per pair moves by
# ±15% from one minute to the next, more than the differences worth
# measuring. Every load is bounded in count and time; the whole run takes
# ~10 minutes with 3 rounds.
#
# Usage: ci/bench.sh [OUTPUT.md]   (default: BENCHMARKS.md at the repository root)
# Environment: BENCH_SECONDS (per timed load, default 10), BENCH_ROUNDS
# (default 3), BENCH_IDLE (idle connections, default 10000; held once, in
# the first round), BENCH_OUT (raw results directory, default bench-out/),
# CARGO_TARGET_DIR.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
report="${1:-$root/BENCHMARKS.md}"
secs="${BENCH_SECONDS:-10}"
rounds="${BENCH_ROUNDS:-3}"
idle_n="${BENCH_IDLE:-10000}"
out="${BENCH_OUT:-$root/bench-out}"
venv="$root/.venv"
rm -rf "$out"
mkdir -p "$out"

echo "::: python virtualenv"
bash ci/setup-venv.sh "$venv"
echo "::: release build"
cargo build --release --locked -p wormhole-mailbox-server --bin wormhole-mailbox \
  -p wormhole-mailbox-harness --bin wormhole-mailbox-conformance
ours="$target/release/wormhole-mailbox"
tool="$target/release/wormhole-mailbox-conformance"

# start_python NAME DB
start_python() {
  port="$(free_port)"
  metrics=""
  start_server "$port" "$out/$1.r$round.server.log" \
    "$venv/bin/twist" wormhole-mailbox "--port=tcp:$port:interface=127.0.0.1" "--channel-db=$2"
}

# start_ours NAME DB [FLAGS...]
start_ours() {
  local name="$1" db="$2"; shift 2
  port="$(free_port)"
  metrics="$(free_port)"
  start_server "$port" "$out/$name.r$round.server.log" \
    "$ours" --port "127.0.0.1:$port" --channel-db "$db" \
    --metrics "127.0.0.1:$metrics" "$@"
}

commits() {
  if [ -z "$metrics" ]; then echo null; return; fi
  curl -s "http://127.0.0.1:$metrics/metrics" |
    awk '/^wormhole_mailbox_commit_duration_seconds_count/ {print $2; found=1} END {if (!found) print "null"}'
}

# load NAME MODE [ARGS...]: one bounded load of round `$round`; its JSON
# line goes to NAME.rROUND.json with the commit count before and after (our
# server only) in NAME.rROUND.commits.json.
load() {
  local name="$1" mode="$2"; shift 2
  local before after
  before="$(commits)"
  echo "--- $name (round $round): $mode $*"
  "$tool" bench "$mode" --url "ws://127.0.0.1:$port/v1" --server-pid "$server_pid" --json "$@" \
    > "$out/$name.r$round.json" || echo "(load $name reported errors)"
  after="$(commits)"
  echo "{\"commits_before\": $before, \"commits_after\": $after}" > "$out/$name.r$round.commits.json"
}

standard_loads() {
  local cfg="$1"
  load "$cfg.pairs10" pairs --concurrency 10 --duration "$secs"
  load "$cfg.pairs100" pairs --concurrency 100 --duration "$secs"
  # two generator threads: one saturates before our server does
  load "$cfg.churn" churn --concurrency 40 --threads 2 --duration "$secs"
}

idle_load() {
  load "$1.idle" idle --concurrency 100 --count "$idle_n" --hold 2 --duration 120
}

loadavg_before="$(cut -d' ' -f1-3 /proc/loadavg)"

for round in $(seq 1 "$rounds"); do
  echo "::: round $round of $rounds"

  echo "::: Python server 0.8.0, on-disk channel DB"
  start_python python-disk "$work/python.r$round.sqlite"
  sleep 1
  if [ "$round" -eq 1 ]; then idle_load python-disk; fi
  standard_loads python-disk
  stop_server

  echo "::: Python server 0.8.0, in-memory channel DB"
  start_python python-memory ":memory:"
  sleep 1
  standard_loads python-memory
  stop_server

  echo "::: ours, default (durable, on-disk)"
  start_ours ours-disk "$work/ours-disk.r$round.sqlite"
  if [ "$round" -eq 1 ]; then idle_load ours-disk; fi
  standard_loads ours-disk
  stop_server

  echo "::: ours, --power-loss-durable (fsync every commit)"
  start_ours ours-fsync "$work/ours-fsync.r$round.sqlite" --power-loss-durable
  load ours-fsync.pairs10 pairs --concurrency 10 --duration "$secs"
  load ours-fsync.pairs100 pairs --concurrency 100 --duration "$secs"
  stop_server

  echo "::: ours, :memory: channel DB (the same server without storage I/O)"
  start_ours ours-memory :memory:
  load ours-memory.pairs10 pairs --concurrency 10 --duration "$secs"
  load ours-memory.pairs100 pairs --concurrency 100 --duration "$secs"
  stop_server
done

loadavg_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# machine and version facts for the report
python_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("magic-wormhole-mailbox-server"))')"
cat > "$out/machine.json" <<EOF
{
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "nproc": "$(nproc)",
  "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')",
  "memory": "$(free -h | awk '/^Mem:/ {print $2}')",
  "kernel": "$(uname -r)",
  "loadavg_before": "$loadavg_before",
  "loadavg_after": "$loadavg_after",
  "rustc": "$(rustc --version)",
  "ours": "$("$ours" --version 2>/dev/null | head -1)",
  "python_server": "magic-wormhole-mailbox-server $python_version ($("$venv/bin/python" --version))",
  "seconds": $secs,
  "rounds": $rounds,
  "idle": $idle_n
}
EOF
python3 ci/bench_report.py "$out" "$root/ci/bench-notes.md" > "$report"
echo "wrote $report (raw results in $out)"
