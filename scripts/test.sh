#!/usr/bin/env bash
# Builds and runs every test with ctest. Set-up first (idempotent), then two builds:
#   build/       RelWithDebInfo, the full suite (unit + integration on the real model)
#   build-asan/  AddressSanitizer + UBSan, the full suite again
# LLM_TEST_CONFIGS="release" (or "asan") runs one of them only.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

jobs=$(nproc 2>/dev/null || echo 2)
configs=${LLM_TEST_CONFIGS:-"release asan"}
status=0
for cfg in $configs; do
    case "$cfg" in
    release) dir=build; flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
    asan)    dir=build-asan; flags=(-DCMAKE_BUILD_TYPE=Debug -DLLM_SANITIZE=ON) ;;
    *) echo "test.sh: unknown config '$cfg'" >&2; exit 2 ;;
    esac
    echo "== $cfg: configure and build ($dir)"
    cmake -S . -B "$dir" "${flags[@]}" > "$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
    cmake --build "$dir" -j "$jobs"
    echo "== $cfg: ctest"
    # Sanitizers: fail on the first report; leaks count.
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    if ! ctest --test-dir "$dir" --output-on-failure -j "$jobs"; then
        status=1
    fi
done
exit $status
