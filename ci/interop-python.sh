#!/usr/bin/env bash
# Interop with the real Python client (magic-wormhole 0.24.0): `wormhole send
# --text`, a 1 MiB file transfer, and a text transfer split by a `kill -9` of
# the server (the client resumes on the restarted server) through our mailbox
# server; then a graceful stop (SIGTERM, exit 0), and checks that the channel
# DB is empty and the usage DB holds the happy rows.
#
# Everything runs inside a private network namespace that has only loopback
# (the Python client offers every address of the machine as a direct-
# connection hint; in the namespace that is only 127.0.0.1/::1), so no
# traffic can leave the machine. Needs root (CI runs as root) and unshare(1).
#
# Usage: ci/interop-python.sh [SERVER_BIN] [VENV] [--server rust|python]
#   SERVER_BIN  our server binary (default: target/debug/wormhole-mailbox
#               of this checkout)
#   VENV        virtualenv with ci/requirements-reference.txt installed
#               (default: .venv of this checkout)
#   --server python  run the same cases against the Python server 0.8.0
#               (`twist wormhole-mailbox` from VENV), to check the script.
# Prints PASS/FAIL per case and a final "interop: N passed, M failed";
# exits non-zero on any failure. Bounded by timeout(1): never hangs CI.
# INTEROP_KEEP=1 keeps the logs and databases (the path is printed).
set -u

SERVER_KIND=rust
POSITIONAL=()
while [ $# -gt 0 ]; do
    case "$1" in
        --server) SERVER_KIND="${2:-}"; shift 2 ;;
        --server=*) SERVER_KIND="${1#--server=}"; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) POSITIONAL+=("$1"); shift ;;
    esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SERVER_BIN="${POSITIONAL[0]:-$ROOT/target/debug/wormhole-mailbox}"
VENV="${POSITIONAL[1]:-$ROOT/.venv}"
case "$SERVER_KIND" in
    rust|python) ;;
    *) echo "interop-python: --server must be rust or python" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- outer part
# Re-run this script inside a new network namespace, under a global timeout.
if [ -z "${INTEROP_IN_NETNS:-}" ]; then
    if [ "$SERVER_KIND" = rust ] && [ ! -x "$SERVER_BIN" ]; then
        echo "FAIL setup: server binary $SERVER_BIN not found (cargo build first)"
        echo "interop: 0 passed, 1 failed"
        exit 1
    fi
    if [ ! -x "$VENV/bin/wormhole" ]; then
        echo "FAIL setup: $VENV/bin/wormhole not found (install ci/requirements-reference.txt)"
        echo "interop: 0 passed, 1 failed"
        exit 1
    fi
    SERVER_BIN="$(cd "$(dirname "$SERVER_BIN")" && pwd)/$(basename "$SERVER_BIN")"
    VENV="$(cd "$VENV" && pwd)"
    INTEROP_IN_NETNS=1 timeout --kill-after=10 300 \
        unshare --net bash "$0" "$SERVER_BIN" "$VENV" --server "$SERVER_KIND"
    rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "FAIL timeout: interop run exceeded 300 s"
        echo "interop: 0 passed, 1 failed"
    elif [ $rc -ne 0 ] && [ $rc -ne 1 ]; then
        echo "FAIL setup: unshare --net failed (exit $rc; needs root)"
        echo "interop: 0 passed, 1 failed"
    fi
    exit $rc
fi

# ---------------------------------------------------------------- in the namespace
PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() {
    echo "FAIL $1: $2"
    FAILED=$((FAILED + 1))
    shift 2
    for f in "$@"; do
        [ -s "$f" ] && { echo "---- $(basename "$f") (last 20 lines)"; tail -n 20 "$f"; }
    done
}
finish() {
    echo "interop-python against the $SERVER_KIND server:"
    echo "interop: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] && exit 0
    exit 1
}

ip link set lo up || { fail setup "cannot bring up lo in the namespace"; finish; }
if [ "$(ip -o link show | wc -l)" -ne 1 ]; then
    fail setup "namespace has interfaces besides lo: $(ip -o link show | cut -d: -f2 | tr -d '\n')"
    finish
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/interop-python.XXXXXX")"
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    if [ -n "${INTEROP_KEEP:-}" ]; then
        echo "logs and databases kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

export HOME="$WORK" PYTHONUNBUFFERED=1 LC_ALL=C.UTF-8 LANG=C.UTF-8
PORT=4000         # nothing else listens in a fresh namespace
TRANSIT_PORT=4001 # nobody listens: the relay hint is refused at once and
                  # the transfer uses the direct loopback hint
PY="$VENV/bin/python"
CHANNEL_DB="$WORK/channel.sqlite"
USAGE_DB="$WORK/usage.sqlite"
CLIENT_TIMEOUT=60

# --- server
# wait_listening PORT PID: polls 127.0.0.1:PORT until it accepts connections
# (at most 20 s); non-zero if it never does or process PID exits first.
wait_listening() {
    for _ in $(seq 1 400); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# Starts the server (appending to server.log) and polls the port until it
# accepts connections; returns non-zero if it never does.
start_server() {
    if [ "$SERVER_KIND" = rust ]; then
        NO_COLOR=1 RUST_LOG=info "$SERVER_BIN" --port "tcp:$PORT:interface=127.0.0.1" \
            --channel-db "$CHANNEL_DB" --usage-db "$USAGE_DB" \
            >>"$WORK/server.log" 2>&1 &
    else
        (cd "$WORK" && exec "$VENV/bin/twist" --log-format=text wormhole-mailbox \
            --port "tcp:$PORT:interface=127.0.0.1" \
            --channel-db "$CHANNEL_DB" --usage-db "$USAGE_DB") \
            >>"$WORK/server.log" 2>&1 &
    fi
    SERVER_PID=$!
    wait_listening "$PORT" "$SERVER_PID"
}

if ! start_server; then
    fail "server start" "$SERVER_KIND server not listening on 127.0.0.1:$PORT" "$WORK/server.log"
    finish
fi
pass "server start ($SERVER_KIND, ws://127.0.0.1:$PORT/v1)"

# wormhole RELAY_PORT ARGS...: the Python client, through the mailbox server
# on RELAY_PORT.
wormhole() {
    local relay_port="$1"; shift
    timeout --kill-after=5 "$CLIENT_TIMEOUT" "$VENV/bin/wormhole" \
        --relay-url "ws://127.0.0.1:$relay_port/v1" \
        --transit-helper "tcp:127.0.0.1:$TRANSIT_PORT" "$@"
}

# Text transfers, in two halves so that a case can act between them; NAME
# names the output files $WORK/send-NAME.out, recv-NAME.out, recv-NAME.err.
# send_text RELAY_PORT NAME CODE TEXT: starts `wormhole send --text` in the
# background (SEND_PID).
send_text() {
    wormhole "$1" send --hide-progress --no-qr --code "$3" --text "$4" \
        >"$WORK/send-$2.out" 2>&1 &
    SEND_PID=$!
}
# receive_text RELAY_PORT NAME CODE: `wormhole receive`, then waits for the
# sender; exit statuses in RECV_RC and SEND_RC.
receive_text() {
    wormhole "$1" receive --hide-progress --accept-file "$3" \
        >"$WORK/recv-$2.out" 2>"$WORK/recv-$2.err"
    RECV_RC=$?
    wait "$SEND_PID"
    SEND_RC=$?
}
# check_text CASE NAME TEXT SERVER_LOG DETAIL: CASE passes if both ends exited
# 0 and the receiver printed TEXT.
check_text() {
    if [ "$SEND_RC" -ne 0 ] || [ "$RECV_RC" -ne 0 ]; then
        fail "$1" "send exit $SEND_RC, receive exit $RECV_RC" \
            "$WORK/send-$2.out" "$WORK/recv-$2.err" "$4"
    elif [ "$(cat "$WORK/recv-$2.out")" != "$3" ]; then
        fail "$1" "received '$(head -c 200 "$WORK/recv-$2.out")', wanted '$3'" \
            "$WORK/recv-$2.err"
    else
        pass "$1 ($5)"
    fi
}

# --- case 1: text
TEXT="hello from interop-python $$"
CODE=7-guitarist-revenge
send_text "$PORT" text "$CODE" "$TEXT"
receive_text "$PORT" text "$CODE"
check_text "text" text "$TEXT" "$WORK/server.log" "wormhole send --text / receive, code $CODE"

# --- case 2: 1 MiB file
CODE=8-guitarist-revenge
head -c 1048576 /dev/urandom >"$WORK/payload.bin"
mkdir "$WORK/out"
wormhole "$PORT" send --hide-progress --no-qr --code "$CODE" "$WORK/payload.bin" \
    >"$WORK/send-file.out" 2>&1 &
SEND_PID=$!
wormhole "$PORT" receive --hide-progress --accept-file -o "$WORK/out/received.bin" "$CODE" \
    >"$WORK/recv-file.out" 2>&1
RECV_RC=$?
wait "$SEND_PID"
SEND_RC=$?
want="$(sha256sum <"$WORK/payload.bin" | cut -d' ' -f1)"
got="$(sha256sum <"$WORK/out/received.bin" 2>/dev/null | cut -d' ' -f1)"
if [ $SEND_RC -ne 0 ] || [ $RECV_RC -ne 0 ]; then
    fail "file" "send exit $SEND_RC, receive exit $RECV_RC" \
        "$WORK/send-file.out" "$WORK/recv-file.out" "$WORK/server.log"
elif [ "$got" != "$want" ]; then
    fail "file" "sha256 $got, wanted $want" "$WORK/recv-file.out"
else
    pass "file (1 MiB, sha256 ${want:0:16}…, code $CODE)"
fi

# --- case 3: text across a kill -9 of the server (protocol.md 6.5): the
# sender has claimed, opened and added its pake when the server dies; it
# reconnects by itself (back-off ~1 s) to the server restarted on the same
# database, and the receiver, started only then, gets the text.
TEXT="hello across a server crash $$"
CODE=9-guitarist-revenge
send_text "$PORT" crash "$CODE" "$TEXT"
# Poll the channel DB until the sender's pake is stored (acked = durable).
"$PY" - "$CHANNEL_DB" >"$WORK/poll.out" 2>&1 <<'EOF_PY'
import sqlite3, sys, time
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        db = sqlite3.connect(sys.argv[1], timeout=1)
        if db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] > 0:
            sys.exit(0)
        db.close()
    except sqlite3.Error:
        pass
    time.sleep(0.05)
print("no message stored within 20 s")
sys.exit(1)
EOF_PY
POLL_RC=$?
kill -KILL "$SERVER_PID" 2>/dev/null
wait "$SERVER_PID" 2>/dev/null
if [ $POLL_RC -ne 0 ]; then
    fail "text across kill -9" "sender's pake never stored" "$WORK/poll.out" "$WORK/send-crash.out"
    kill "$SEND_PID" 2>/dev/null
    wait "$SEND_PID" 2>/dev/null
    SERVER_PID=
    finish
fi
if ! start_server; then
    fail "text across kill -9" "server did not restart" "$WORK/server.log"
    kill "$SEND_PID" 2>/dev/null
    wait "$SEND_PID" 2>/dev/null
    finish
fi
receive_text "$PORT" crash "$CODE"
check_text "text across kill -9" crash "$TEXT" "$WORK/server.log" \
    "sender resumed on the restarted server, code $CODE"

# --- case 4: graceful stop
kill -TERM "$SERVER_PID"
stop_rc=
for _ in $(seq 1 400); do # at most 20 s
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID"
        stop_rc=$?
        break
    fi
    sleep 0.05
done
if [ -z "$stop_rc" ]; then
    fail "stop" "server still running 20 s after SIGTERM" "$WORK/server.log"
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
elif [ "$stop_rc" -eq 0 ]; then
    pass "stop (SIGTERM, exit 0)"
elif [ "$SERVER_KIND" = python ] && [ "$stop_rc" -eq 143 ]; then
    # Twisted's `twist` re-raises the signal after a clean shutdown; ours
    # exits 0 (issue 2: "SIGINT/SIGTERM: ... exit 0").
    pass "stop (SIGTERM, exit 143 = Twisted re-raising SIGTERM after a clean stop)"
else
    fail "stop" "exit status $stop_rc after SIGTERM" "$WORK/server.log"
fi
SERVER_PID=

# --- case 5: databases
"$PY" - "$CHANNEL_DB" "$USAGE_DB" >"$WORK/db-check.out" 2>&1 <<'EOF'
import sqlite3, sys
channel, usage = (sqlite3.connect(p) for p in sys.argv[1:3])
problems = []
ok = channel.execute("PRAGMA integrity_check").fetchone()[0]
if ok != "ok":
    problems.append(f"channel integrity_check: {ok}")
for table in ("nameplates", "nameplate_sides", "mailboxes", "mailbox_sides", "messages"):
    n = channel.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    if n:
        problems.append(f"channel {table}: {n} rows left")
for table in ("nameplates", "mailboxes"):
    results = [r for (r,) in usage.execute(f"SELECT result FROM {table} ORDER BY rowid")]
    if results != ["happy"] * 3:
        problems.append(f"usage {table} results {results}, wanted 3x happy")
fn = [f for (f,) in usage.execute("SELECT for_nameplate FROM mailboxes")]
if fn != [1] * 3:
    problems.append(f"usage mailboxes for_nameplate {fn}, wanted [1, 1, 1]")
impl = sorted(set(r for r in usage.execute(
    "SELECT implementation, version FROM client_versions")))
if impl != [("python", "0.24.0")]:
    problems.append(f"usage client_versions {impl}, wanted python 0.24.0")
n = usage.execute("SELECT COUNT(*) FROM client_versions").fetchone()[0]
if n != 7:
    problems.append(f"usage client_versions: {n} rows, wanted 7 (2 per transfer, "
                    "+1 for the sender's reconnection)")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF
if [ $? -eq 0 ]; then
    pass "databases (channel DB empty and intact; usage: 3 happy nameplates, 3 happy mailboxes)"
else
    fail "databases" "see below" "$WORK/db-check.out"
fi


# --- case 6 (ours only): permissions offered, `none` allowed. The Python
# client 0.24.0 knows nothing of permissions: it ignores
# `permission-required` and binds at once, which `none` allows.
if [ "$SERVER_KIND" = rust ]; then
    PERM_PORT=4002
    NO_COLOR=1 RUST_LOG=info "$SERVER_BIN" --port "tcp:$PERM_PORT:interface=127.0.0.1" \
        --channel-db :memory: --permissions none --permissions hashcash \
        >>"$WORK/server-perm.log" 2>&1 &
    PERM_PID=$!
    wait_listening "$PERM_PORT" "$PERM_PID" # on failure, the transfer fails
    CODE=8-permission-slip
    TEXT="hello through permissions $$"
    send_text "$PERM_PORT" perm "$CODE" "$TEXT"
    receive_text "$PERM_PORT" perm "$CODE"
    kill -TERM "$PERM_PID" 2>/dev/null
    wait "$PERM_PID" 2>/dev/null
    check_text "text with permissions offered" perm "$TEXT" "$WORK/server-perm.log" \
        "none + hashcash; the Python client uses none"
fi

finish
