#!/usr/bin/env bash
# The main job, for now: set up (idempotent), build, and run one local generation with
# the default model, streaming the answer. It grows into the cluster demo (coordinator
# + workers + Redis) as those parts land.
#   ./scripts/run.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo > build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target llm-worker > build.log 2>&1 || { cat build.log; exit 1; }

model=${LLM_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
question=${1:-"What is the capital of France? Answer in one sentence."}
echo "> $question"
./build/worker/llm-worker --model "$model" --chat --prompt "$question" \
    --temperature 0 --max-tokens 128 --log-level warn
echo
echo "Try it yourself:"
echo "  ./build/worker/llm-worker --model $model --chat --prompt \"Write a haiku about C\" --temperature 0.7 --seed 1"
echo "  ./build/worker/llm-worker --help"
