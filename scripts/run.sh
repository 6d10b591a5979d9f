#!/usr/bin/env bash
# The main job: set up (idempotent), build, start a local cluster on loopback (a coordinator
# and two workers on the default model, through scripts/cluster.sh), send one streamed chat
# request through the OpenAI-compatible HTTP API with curl, print the answer, and leave the
# cluster running until `./scripts/cluster.sh down`. Auth is off (LLM_AUTH=false) for this
# local cluster. Redis joins with its own issue.
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
port=${LLM_HTTP_PORT:-8080}
url=http://127.0.0.1:$port/v1/chat/completions
model=$(basename "${LLM_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}" .gguf)
# The request's JSON, with the question escaped by the test venv's Python (made by setup.sh).
body=$(.venv/bin/python -c 'import json,sys; print(json.dumps({"model": sys.argv[1],
    "messages": [{"role": "user", "content": sys.argv[2]}], "max_tokens": 128,
    "temperature": 0, "stream": True}))' "$model" "$question")
echo
echo "> $question"
# Server-Sent Events: print each chunk's text as it arrives.
curl -sS -N --fail-with-body -H "Content-Type: application/json" -d "$body" "$url" |
    .venv/bin/python -u -c '
import json, sys
for line in sys.stdin:
    if line.startswith("data: ") and line.strip() != "data: [DONE]":
        ev = json.loads(line[6:])
        if "error" in ev:
            sys.exit("error: " + ev["error"]["message"])
        for c in ev["choices"]:
            print(c["delta"].get("content") or "", end="", flush=True)
print()'

cat <<EOF

The cluster is still running (HTTP http://127.0.0.1:$port, RPC ${LLM_RPC_ADDR:-tcp://127.0.0.1:7070};
logs and pid files in ${LLM_RUN_DIR:-run}/). Talk to it:
  curl -N http://127.0.0.1:$port/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "$model", "messages": [{"role": "user", "content": "Write a haiku about C"}], "stream": true}'
  curl http://127.0.0.1:$port/v1/models;  curl http://127.0.0.1:$port/health
  OpenAI clients: base_url="http://127.0.0.1:$port/v1", any api_key (auth is off here)
  $ctl chat --temperature 0.7 --seed 1 "Write a haiku about C"     (protobuf RPC)
  $ctl status                     workers, load, routing
  ./scripts/cluster.sh down       stop the cluster
EOF
