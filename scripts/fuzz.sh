#!/usr/bin/env bash
# Runs the libFuzzer targets (clang, ASan + UBSan) for a while each:
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s; targets: envelope coord oai)
# envelope: the worker's dispatcher (wserver_handle); coord: the coordinator's client
# and membership ports (relay_handle, members_handle); oai: the OpenAI JSON layer
# (oai_parse and the formatters).
# The corpora grow under build-fuzz/corpus/TARGET/, starting from tests/fuzz/seeds/TARGET/
# where there is one, with the dictionary tests/fuzz/TARGET.dict where there is one;
# crashes are written to build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope coord oai)
command -v clang > /dev/null || { echo "fuzz.sh: clang is not installed" >&2; exit 1; }
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DLLM_SANITIZE=ON -DLLM_FUZZ=ON \
    > build-fuzz.configure.log 2>&1 || { cat build-fuzz.configure.log; exit 1; }
for t in "${targets[@]}"; do
    case "$t" in
    envelope | coord | oai) ;;
    *) echo "fuzz.sh: unknown target '$t' (envelope, coord, oai)" >&2; exit 2 ;;
    esac
    cmake --build build-fuzz -j "$(nproc)" --target "fuzz_$t"
done
cd build-fuzz
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    flags=() # libFuzzer writes new inputs into the first directory only: corpus/$t
    seeds=()
    [ -f "../tests/fuzz/$t.dict" ] && flags+=(-dict="../tests/fuzz/$t.dict")
    [ -d "../tests/fuzz/seeds/$t" ] && seeds+=("../tests/fuzz/seeds/$t")
    echo "fuzz.sh: fuzz_$t for ${secs} s"
    ASAN_OPTIONS=detect_leaks=1 "./tests/fuzz_$t" -max_total_time="$secs" -max_len=4096 \
        ${flags[@]+"${flags[@]}"} "corpus/$t" ${seeds[@]+"${seeds[@]}"}
done
