#!/usr/bin/env bash
# Runs the libFuzzer targets (clang, ASan + UBSan) for a while each:
#   ./scripts/fuzz.sh [SECONDS]       (default 60)
# The corpus grows under build-fuzz/corpus/; crashes are written to build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
secs=${1:-60}
command -v clang > /dev/null || { echo "fuzz.sh: clang is not installed" >&2; exit 1; }
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DLLM_SANITIZE=ON -DLLM_FUZZ=ON \
    > build-fuzz.configure.log 2>&1 || { cat build-fuzz.configure.log; exit 1; }
cmake --build build-fuzz -j "$(nproc)" --target fuzz_envelope
mkdir -p build-fuzz/corpus/envelope
cd build-fuzz
ASAN_OPTIONS=detect_leaks=1 ./tests/fuzz_envelope -max_total_time="$secs" -max_len=4096 \
    corpus/envelope
