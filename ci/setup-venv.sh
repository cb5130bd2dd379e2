#!/usr/bin/env bash
# Creates (or reuses) the project virtualenv with the pinned Python reference
# implementations: the mailbox server 0.8.0 and the wormhole client 0.24.0.
# Usage: ci/setup-venv.sh [VENV_DIR]   (default: .venv at the repository root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/ci/requirements-reference.txt" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/ci/requirements-reference.txt"
echo "$want" > "$stamp"
echo "virtualenv ready: $venv ($("$venv/bin/twist" --version 2>/dev/null | head -1))"
