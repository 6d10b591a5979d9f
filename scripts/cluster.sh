#!/usr/bin/env bash
# cluster.sh - a local cluster on loopback: one llm-coordinator and N llm-worker processes,
# each in the background with its own port, log and pid file under run/.
#   ./scripts/cluster.sh up       start what is not running; wait until N workers are ready
#   ./scripts/cluster.sh down     stop everything: SIGTERM (workers drain), SIGKILL after a bound
#   ./scripts/cluster.sh status   which processes live, then `llmctl status`
# It builds nothing: the binaries must be in build/ (./scripts/run.sh builds them).
# `up` is safe to run again: a running cluster is left alone (missing processes are started).
#
# Environment, with defaults (paths are relative to where you run it):
#   LLM_WORKERS=2                  workers; worker i listens on tcp://127.0.0.1:$((7100 + i))
#   LLM_MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
#   LLM_ENGINE=model               or synthetic: model-free workers for control-plane tests
#   LLM_POLICY=prefix              routing policy of the model (round_robin, least_loaded, ...)
#   LLM_RPC_ADDR=tcp://127.0.0.1:7070       clients (llmctl) talk to the coordinator here
#   LLM_REGISTER_ADDR=tcp://127.0.0.1:7079  workers register here
#   LLM_HTTP_PORT=8080             the OpenAI-compatible HTTP front door, on 127.0.0.1
#   LLM_AUTH=false                 true: HTTP wants API keys (give them with
#                                  LLM_COORDINATOR_ARGS="--api-keys '...'" or the config)
#   LLM_WORKER_BASE_PORT=7100  LLM_RUN_DIR=run  LLM_BUILD_DIR=build
#   LLM_WORKER_ARGS, LLM_COORDINATOR_ARGS   extra flags, split on spaces
#   LLM_UP_TIMEOUT_S=180  LLM_DOWN_TIMEOUT_S=30
# Exit status: 0 done, 1 failed, 2 bad usage; `status`: 0 when the coordinator answers,
# 3 when nothing runs, 1 otherwise.
set -euo pipefail

here=$PWD
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$here/$1" ;; esac; }
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

run_dir=$(abspath "${LLM_RUN_DIR:-$root/run}")
build_dir=$(abspath "${LLM_BUILD_DIR:-$root/build}")
coord_bin=$build_dir/coordinator/llm-coordinator
worker_bin=$build_dir/worker/llm-worker
ctl_bin=$build_dir/client/llmctl
env_file=$run_dir/cluster.env

# The settings of the running cluster win over the environment's defaults, so `status`
# and `down` find the cluster `up` started whatever this shell exports.
if [ -f "$env_file" ]; then
    # shellcheck disable=SC1090
    . "$env_file"
    rec_rpc=$REC_RPC_ADDR
else
    rec_rpc=
fi

workers=${LLM_WORKERS:-2}
model=$(abspath "${LLM_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}")
engine=${LLM_ENGINE:-model}
policy=${LLM_POLICY:-prefix}
rpc_addr=${LLM_RPC_ADDR:-${rec_rpc:-tcp://127.0.0.1:7070}}
register_addr=${LLM_REGISTER_ADDR:-${REC_REGISTER_ADDR:-tcp://127.0.0.1:7079}}
http_port=${LLM_HTTP_PORT:-${REC_HTTP_PORT:-8080}}
auth=${LLM_AUTH:-false}
base_port=${LLM_WORKER_BASE_PORT:-7100}
up_timeout=${LLM_UP_TIMEOUT_S:-180}
down_timeout=${LLM_DOWN_TIMEOUT_S:-30}

die() {
    echo "cluster.sh: error: $*" >&2
    exit 1
}

# lives PID: the process exists and is not a zombie (an exited child nobody reaped yet).
lives() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ] || return 1
    fi
    return 0
}

# pid_of NAME: the pid in NAME.pid when that process lives and is still our binary (a
# recycled pid is not ours); nothing otherwise.
pid_of() {
    local f=$run_dir/$1.pid pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    lives "$pid" || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'llm-' || return 1
    fi
    printf '%s\n' "$pid"
}

names() {
    # Every process with a pid file: workers first (in number order), the coordinator last.
    local f
    for f in "$run_dir"/worker-*.pid; do
        [ -e "$f" ] && basename "$f" .pid
    done | sort -t- -k2 -n
    [ -e "$run_dir/coordinator.pid" ] && echo coordinator
    return 0
}

# start NAME CMD...: run CMD in its own session (a ^C in this terminal does not reach it)
# with stdout and stderr in NAME.log; the pid is written by the child itself, so it is the
# pid of the binary whether or not setsid had to fork.
start() {
    local name=$1
    shift
    local log=$run_dir/$name.log pidf=$run_dir/$name.pid
    [ -f "$log" ] && mv -f "$log" "$log.1"
    rm -f "$pidf"
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidf" "$@" </dev/null >"$log" 2>&1 &
    local i
    for i in $(seq 1 100); do
        [ -s "$pidf" ] && break
        sleep 0.02
    done
    echo "started $name (pid $(cat "$pidf" 2>/dev/null || echo '?'), log $log)"
}

tail_logs() {
    local n
    for n in $(names); do
        echo "---- $run_dir/$n.log (last 15 lines)" >&2
        tail -n 15 "$run_dir/$n.log" >&2 2>/dev/null || true
    done
}

ready_count() {
    # Rows of `llmctl status` whose state column says ready, for our worker ids.
    "$ctl_bin" --addr "$rpc_addr" --timeout-ms 1000 status 2>/dev/null |
        awk '$1 ~ /^worker-[0-9]+$/ && $2 == "ready" { n++ } END { print n + 0 }'
}

cmd_up() {
    case "$workers" in '' | *[!0-9]* | 0) die "LLM_WORKERS must be a positive integer, not '$workers'" ;; esac
    case "$engine" in model | synthetic) ;; *) die "LLM_ENGINE must be model or synthetic, not '$engine'" ;; esac
    for b in "$coord_bin" "$worker_bin" "$ctl_bin"; do
        [ -x "$b" ] || die "$b is missing: build first (./scripts/run.sh, or cmake --build build)"
    done
    local name tokenizer
    if [ "$engine" = synthetic ]; then
        name=synthetic
        tokenizer=synthetic
    else
        [ -f "$model" ] || die "model $model not found (./scripts/setup.sh downloads the default)"
        name=$(basename "$model" .gguf)
        tokenizer=$model
    fi
    mkdir -p "$run_dir"

    local started=0 pid
    if pid=$(pid_of coordinator); then
        # Reuse the running coordinator's addresses: new workers must register there.
        rpc_addr=${REC_RPC_ADDR:-$rpc_addr}
        register_addr=${REC_REGISTER_ADDR:-$register_addr}
    else
        {
            printf 'REC_RPC_ADDR=%q\n' "$rpc_addr"
            printf 'REC_REGISTER_ADDR=%q\n' "$register_addr"
            printf 'REC_HTTP_PORT=%q\n' "$http_port"
            printf 'REC_MODEL=%q\n' "$name"
            printf 'REC_ENGINE=%q\n' "$engine"
        } >"$env_file"
        # shellcheck disable=SC2086
        start coordinator "$coord_bin" --config "$root/configs/coordinator.cfg" \
            --listen "$rpc_addr" --register-listen "$register_addr" \
            --http-port "$http_port" --auth="$auth" \
            --models "$name tokenizer=$tokenizer policy=$policy" ${LLM_COORDINATOR_ARGS:-}
        started=1
    fi

    local cpus threads i engine_args
    cpus=$(nproc 2>/dev/null || echo 1)
    threads=$((cpus / workers))
    [ "$threads" -ge 1 ] || threads=1
    if [ "$engine" = synthetic ]; then
        engine_args=(--engine synthetic)
    else
        engine_args=(--model "$model" --threads "$threads" --kv-memory-mb 256)
    fi
    for i in $(seq 1 "$workers"); do
        pid_of "worker-$i" >/dev/null && continue
        # shellcheck disable=SC2086
        start "worker-$i" "$worker_bin" "${engine_args[@]}" \
            --listen "tcp://127.0.0.1:$((base_port + i))" --coordinator "$register_addr" \
            --worker-id "worker-$i" --log-level info ${LLM_WORKER_ARGS:-}
        started=1
    done
    if [ "$started" = 0 ]; then
        echo "cluster already up: coordinator on $rpc_addr, $workers worker(s)"
    fi

    echo "waiting for $workers ready worker(s) at $rpc_addr (at most ${up_timeout}s) ..."
    local deadline=$((SECONDS + up_timeout)) ready=0 n
    while :; do
        for n in $(names); do
            if [ "$n" = coordinator ] || [ "${n#worker-}" -le "$workers" ]; then
                pid_of "$n" >/dev/null || {
                    echo "cluster.sh: error: $n exited during start-up" >&2
                    tail_logs
                    echo "cluster.sh: the rest is still running; ./scripts/cluster.sh down stops it" >&2
                    exit 1
                }
            fi
        done
        ready=$(ready_count)
        [ "$ready" -ge "$workers" ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "cluster.sh: error: only $ready of $workers worker(s) ready after ${up_timeout}s" >&2
            tail_logs
            echo "cluster.sh: the processes are still running; ./scripts/cluster.sh down stops them" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "cluster up: coordinator on $rpc_addr and http://127.0.0.1:$http_port ($name, policy $policy), $ready worker(s) ready; logs in $run_dir"
}

cmd_down() {
    local n pid pids=() left
    # Workers first: on SIGTERM they drain and deregister while the coordinator still runs.
    for phase in workers coordinator; do
        pids=()
        for n in $(names); do
            if { [ "$phase" = workers ] && [ "$n" != coordinator ]; } ||
                { [ "$phase" = coordinator ] && [ "$n" = coordinator ]; }; then
                if pid=$(pid_of "$n"); then
                    kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && echo "stopping $n (pid $pid)"
                fi
            fi
        done
        local deadline=$((SECONDS + down_timeout))
        while [ ${#pids[@]} -gt 0 ]; do
            left=()
            for pid in "${pids[@]}"; do
                lives "$pid" && left+=("$pid")
            done
            pids=(${left[@]+"${left[@]}"})
            [ ${#pids[@]} -eq 0 ] && break
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "cluster.sh: ${pids[*]} still running after ${down_timeout}s: SIGKILL" >&2
                kill -KILL "${pids[@]}" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    done
    local had=0
    for n in $(names); do
        rm -f "$run_dir/$n.pid"
        had=1
    done
    rm -f "$env_file"
    if [ "$had" = 1 ]; then
        echo "cluster down"
    else
        echo "cluster not running"
    fi
}

cmd_status() {
    local n pid any=0 coord=0
    for n in $(names); do
        if pid=$(pid_of "$n"); then
            printf '%-12s running  pid %s\n' "$n" "$pid"
            any=1
            [ "$n" = coordinator ] && coord=1
        else
            printf '%-12s stopped  (stale pid file %s)\n' "$n" "$run_dir/$n.pid"
        fi
    done
    if [ "$any" = 0 ]; then
        echo "cluster not running"
        exit 3
    fi
    [ "$coord" = 1 ] || exit 1
    echo "coordinator RPC $rpc_addr, workers register at $register_addr, HTTP http://127.0.0.1:${REC_HTTP_PORT:-$http_port}"
    echo
    [ -x "$ctl_bin" ] || die "$ctl_bin is missing"
    "$ctl_bin" --addr "$rpc_addr" status
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status   (see the top of the file for the environment)" >&2
    exit 2
    ;;
esac
