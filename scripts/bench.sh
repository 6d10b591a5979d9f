#!/usr/bin/env bash
# Benchmarks (never part of the test run). Each target prints Markdown; `suite` runs them
# all and writes each one's tables into its marked section of docs/BENCHMARKS.md
# (scripts/bench_md.py; the analysis around the markers is written by hand).
#   ./scripts/bench.sh engine    engine speed for every weight type, 1 and 2 threads,
#                                then batched decode on the default model
#   ./scripts/bench.sh worker    one llm-worker through its protocol: throughput at 1-64
#                                streams, TTFT alone / under load, prefix reuse
#   ./scripts/bench.sh coord     the coordinator with synthetic workers: routing overhead,
#                                CPU per request, request rate, imbalance, failover stall
#   ./scripts/bench.sh http      the HTTP front door: overhead over RPC, keep-alive request
#                                rate (wrk), streamed chats on the default model
#   ./scripts/bench.sh serve     llm-bench through HTTP on the default model: latency vs
#                                request rate, throughput vs concurrency, TTFT CDF (+ PNG
#                                plots in docs/img/)
#   ./scripts/bench.sh scale     one coordinator, 128 synthetic workers, increasing rates:
#                                CPU per request, imbalance, saturation (docs/scaling.md)
#   ./scripts/bench.sh llamacpp  our engine against llama.cpp (built from the PyPI sdist of
#                                llama-cpp-python) on the same files and cores
#   ./scripts/bench.sh suite     all of the above, written into docs/BENCHMARKS.md
#                                (LLM_BENCH_SUITE="coord http" runs some of them)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo > build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" > build.log 2>&1 || { cat build.log; exit 1; }

model=${LLM_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
reps=${LLM_BENCH_REPS:-3} # best of 3: this VM has slow seconds

engine() {
    mkdir -p models/bench
    echo "# Engine, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    # Every type llm-quantize writes, from the widest down.
    for t in F32 F16 BF16 Q8_0 Q6_K Q5_1 Q5_K Q5_0 Q4_1 Q4_K Q4_0; do
        f=models/bench/$(basename "$model" .gguf).$t.gguf
        # The default model is Q4_1 already: re-quantizing it to Q4_1 would change only
        # its Q8_0 embedding, so the original file is the Q4_1 row.
        # Others are re-made whenever llm-quantize is newer than them (its output may change).
        if [ "$t" = Q4_1 ]; then
            f=$model
        elif ! [ "$f" -nt build/worker/llm-quantize ]; then
            ./build/worker/llm-quantize "$model" "$f" "$t" 2>/dev/null
        fi
        echo
        echo "### $t ($(du -m "$f" | cut -f1) MiB on disk)"
        ./build/worker/llm-engine-bench --model "$f" --threads 1,2 --reps "$reps" | tail -n +3
    done
    echo
    echo "### Batched decode, $model"
    ./build/worker/llm-engine-bench --model "$model" --threads 2 --reps "$reps" \
        --prompt-tokens 16 --decode-tokens 16 --batch 1,4,16,64 | sed -n '/Batched/,$p'
}

worker() {
    echo "# Worker serving, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    .venv/bin/python scripts/bench_worker.py build "$model" "${LLM_BENCH_THREADS:-2}"
}

coord() {
    echo "# Coordinator, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    .venv/bin/python scripts/bench_coord.py build
}

http() {
    echo "# HTTP front door, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    .venv/bin/python scripts/bench_http.py build "$model"
}

llamacpp() {
    echo "# Against llama.cpp, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    .venv/bin/python scripts/bench_llamacpp.py build "$model"
}

serve() {
    echo "# Serving through HTTP, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    .venv/bin/python scripts/bench_serve.py build "$model"
}

scale() {
    echo "# Scale simulation, $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    .venv/bin/python scripts/bench_scale.py build "${LLM_SCALE_WORKERS:-128}"
}

suite() {
    local s out
    for s in ${LLM_BENCH_SUITE:-engine llamacpp worker coord http serve scale}; do
        out=$(mktemp)
        "$s" | tee "$out"
        .venv/bin/python scripts/bench_md.py "$s" "$out" "./scripts/bench.sh $s"
        rm -f "$out"
    done
}

case "${1:-engine}" in
engine) engine ;;
worker) worker ;;
coord) coord ;;
http) http ;;
serve) serve ;;
scale) scale ;;
llamacpp) llamacpp ;;
suite) suite ;;
*) echo "usage: scripts/bench.sh engine|worker|coord|http|serve|scale|llamacpp|suite" >&2; exit 2 ;;
esac
