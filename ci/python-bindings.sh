#!/usr/bin/env bash
# python-bindings: builds the wheel with maturin, installs it into a fresh
# virtualenv (never `maturin develop`: a packaging mistake must show), checks
# the hand-written stub and the types, and runs the pytest suite inside a
# private network namespace that has only loopback (real wormhole clients
# advertise every local address as a transit hint; tests may only reach
# loopback).
#
# Usage: ci/python-bindings.sh [VENV_DIR]
#   VENV_DIR  the virtualenv to create (default ./.venv-py-test); it is
#             deleted and created afresh on every run.
# Environment:
#   PYTHON                  interpreter for the venv (default python3.11)
#   PY_BINDINGS_PROFILE     debug (default) or release: the wheel's cargo
#                           profile; debug builds about twice as fast and the
#                           suite does not need the speed
#   PY_BINDINGS_TARGET_DIR  cargo target dir (default target/python-bindings,
#                           apart from the workspace's own artifacts and lock)
#   PYTEST_ADDOPTS          extra pytest options, as usual
# Needs: a Rust toolchain, the interpreter, unshare and ip (util-linux and
# iproute2), root or unprivileged user namespaces, and PyPI and crates.io.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg=$repo/python-bindings
venv=${1:-./.venv-py-test}
python=${PYTHON:-python3.11}
profile=${PY_BINDINGS_PROFILE:-debug}
export CARGO_TARGET_DIR=${PY_BINDINGS_TARGET_DIR:-$repo/target/python-bindings}

started=$SECONDS
step_started=$SECONDS
step() {
    printf '\n==> %s (after %ss; previous step %ss)\n' "$*" "$((SECONDS - started))" \
        "$((SECONDS - step_started))"
    step_started=$SECONDS
}
die() {
    echo "error: $*" >&2
    exit 1
}

case $profile in
    debug) profile_args=() ;;
    release) profile_args=(--release) ;;
    *) die "PY_BINDINGS_PROFILE must be debug or release, not '$profile'" ;;
esac

# The network namespace: as root (CI) a plain one, else with a user
# namespace that maps us to root inside it.
if unshare -n true 2>/dev/null; then
    netns=(unshare -n --)
elif unshare -rn true 2>/dev/null; then
    netns=(unshare -rn --)
else
    die "cannot create a network namespace (unshare -n): run as root or enable user namespaces"
fi
command -v ip >/dev/null || die "ip (iproute2) is needed to bring loopback up in the namespace"
command -v "$python" >/dev/null || die "$python not found (set PYTHON)"

step "fresh virtualenv at $venv ($("$python" --version))"
rm -rf "$venv"
"$python" -m venv "$venv"
venv=$(cd "$venv" && pwd)
echo '*' >"$venv/.gitignore" # as Python 3.13's venv does
vpy=$venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$vpy" -m pip install --quiet -r "$pkg/requirements-test.txt"

step "maturin build ($profile, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
wheels=$venv/wheels
"$venv/bin/maturin" build "${profile_args[@]}" --manifest-path "$pkg/Cargo.toml" \
    --interpreter "$vpy" --out "$wheels"
shopt -s nullglob
built=("$wheels"/wormhole_mailbox-*-abi3-*.whl)
shopt -u nullglob
[ "${#built[@]}" -eq 1 ] || die "expected one abi3 wheel in $wheels, found: ${built[*]:-none}"

step "install ${built[0]##*/} into the venv"
"$vpy" -m pip install --quiet --no-deps "${built[0]}"

step "stub and type checks"
export MYPY_CACHE_DIR=$venv/mypy-cache
# Outside the source tree, so that only the installed package is seen.
(cd "$venv" && "$vpy" -m mypy.stubtest wormhole_mailbox._native)
(cd "$venv" && "$vpy" -m mypy --strict -p wormhole_mailbox)
(cd "$pkg" && "$vpy" -m mypy tests)

# The abi3 wheel claims CPython >= 3.9: import and serve once with the
# oldest interpreter, where the machine has one.
if command -v python3.9 >/dev/null && python3.9 -c '' 2>/dev/null; then
    step "smoke test on $(python3.9 --version)"
    rm -rf "$venv/py39"
    python3.9 -m venv "$venv/py39"
    "$venv/py39/bin/python" -m pip install --quiet --no-deps "${built[0]}"
    (cd "$venv" && "$venv/py39/bin/python" -c '
import wormhole_mailbox
with wormhole_mailbox.MailboxServer(motd="3.9") as s:
    assert s.url.startswith("ws://127.0.0.1:") and s.nameplates("app") == []
print("ok:", wormhole_mailbox.__version__, s)
')
fi

step "pytest in a network namespace with only loopback"
cd "$pkg"
set +e
"${netns[@]}" env WORMHOLE_MAILBOX_REQUIRE_NETNS=1 PYTHONDONTWRITEBYTECODE=1 \
    sh -c 'ip link set lo up && exec "$@"' sh \
    "$vpy" -m pytest -p no:cacheprovider --durations=10
status=$?
set -e
step "done: pytest exit status $status"
exit "$status"
