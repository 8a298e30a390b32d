#!/usr/bin/env bash
# Install the virtualenvs the `letta` engine's tests and benchmarks need.
#
#   letta-0.11.7        a real Letta server (the last one that runs on SQLite),
#                       used by tests/support/letta_server.py
#   ai-memory-sdk-0.2.0 the original package (pins letta-client 0.1.307),
#                       used only by side-by-side benchmarks
#
# Both live outside the project's own venv, under
# ${AI_MEMORY_CACHE:-$HOME/.cache/ai-memory-sdk}. Idempotent: a marker file in
# each venv records a finished install; delete the venv to reinstall.
# Needs the package index (PyPI) once; nothing at test time.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
CACHE="${AI_MEMORY_CACHE:-$HOME/.cache/ai-memory-sdk}"
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
SHARED="${AI_MEMORY_SHARED:-$ROOT/../shared}"
CONSTRAINTS="$SHARED/letta-server/constraints-0.11.7.txt"
MARKER=".ai-memory-sdk-installed"

_install() {
    # _install <venv dir> <pip args...>: create the venv and pip install once.
    local dir="$1"; shift
    local want="$*"
    if [[ -f "$dir/$MARKER" ]] && [[ "$(cat "$dir/$MARKER")" == "$want" ]]; then
        echo "setup-letta: $dir already installed"
        return 0
    fi
    echo "setup-letta: installing into $dir: $want"
    rm -f "$dir/$MARKER"
    [[ -x "$dir/bin/python" ]] || "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    printf '%s' "$want" > "$dir/$MARKER"
}

mkdir -p "$CACHE"

if [[ ! -f "$CONSTRAINTS" ]]; then
    echo "setup-letta: constraints file not found: $CONSTRAINTS" >&2
    echo "setup-letta: set AI_MEMORY_SHARED to the folder that holds letta-server/" >&2
    exit 1
fi

_install "$CACHE/letta-0.11.7" \
    'letta[server,sqlite]==0.11.7' asyncpg -c "$CONSTRAINTS"
_install "$CACHE/ai-memory-sdk-0.2.0" 'ai-memory-sdk==0.2.0'

echo "setup-letta: done"
echo "  LETTA server venv: $CACHE/letta-0.11.7/bin/letta"
echo "  original SDK venv: $CACHE/ai-memory-sdk-0.2.0/bin/python"
