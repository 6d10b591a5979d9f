#!/usr/bin/env bash
# The main job: set up (idempotent), build, start a local cluster on loopback (a coordinator
# and two workers on the default model, through scripts/cluster.sh), send one chat request
# through the coordinator, stream the answer, and leave the cluster running until
# `./scripts/cluster.sh down`. Redis and the OpenAI HTTP front door join as they land.
#   ./scripts/run.sh ["your question"]
# cluster.sh's environment applies (LLM_WORKERS, LLM_MODEL, LLM_RPC_ADDR, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo > build.configure.log 2>&1 || { cat build.configure.log; exit 1; }
echo "building (log in build.log) ..."
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" > build.log 2>&1 || { tail -n 60 build.log; exit 1; }

./scripts/cluster.sh up

question=${1:-"What is the capital of France? Answer in one sentence."}
ctl=./build/client/llmctl
echo
echo "> $question"
"$ctl" chat --temperature 0 --max-tokens 128 "$question"

addr=${LLM_RPC_ADDR:-tcp://127.0.0.1:7070}
cat <<EOF

The cluster is still running (coordinator $addr; logs and pid files in ${LLM_RUN_DIR:-run}/). Talk to it:
  $ctl chat --temperature 0.7 --seed 1 "Write a haiku about C"
  $ctl generate --max-tokens 64 --temperature 0 "The three primary colors are"
  $ctl status                     workers, load, routing; $ctl models
  ./scripts/cluster.sh status     which processes run
  ./scripts/cluster.sh down       stop the cluster
(llmctl talks to \$LLM_RPC_ADDR, default tcp://127.0.0.1:7070; --addr URL overrides it.)
EOF
