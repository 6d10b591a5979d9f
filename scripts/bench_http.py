"""bench_http.py - the HTTP front door's figures for docs/BENCHMARKS.md (issue "Front door"):

  - HTTP overhead over the RPC path: 1-token requests one at a time through HTTP (wrk, one
    keep-alive connection) and through the coordinator's RPC port (llm-load), p50/p99 and
    the coordinator's CPU time per request, with one synthetic worker
  - sustained request rate through HTTP with keep-alive (wrk, 16 and 64 connections; 4
    synthetic workers; load generator, workers and coordinator on the same cores), beside
    the RPC rate at the same concurrency
  - streamed chats on the default model through HTTP (the openai package): TTFT and
    inter-token latency at 1 and 8 concurrent streams, and aggregate generated tok/s

Usage: python3 scripts/bench_http.py BUILD_DIR MODEL [overhead|rate|stream ...]
(run by scripts/bench.sh http)
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import itest  # noqa: E402
from bench_coord import Cluster, cpu_s, load, one_token, pct  # noqa: E402

BODY = {"model": "synthetic", "prompt": "request", "max_tokens": 1, "temperature": 0}


def wrk(url, conns, secs, body):
    """Runs wrk (keep-alive, POST body) and returns (requests, wall_s, p50_ms, p99_ms)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(json.dumps(body))}\n")
        script = f.name
    try:
        p = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "-s", script,
                            url], capture_output=True, timeout=secs + 60)
    finally:
        os.unlink(script)
    out = p.stdout.decode()
    if p.returncode != 0 or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk: rc={p.returncode}\n{out}\n{p.stderr.decode()}")
    n = int(re.search(r"(\d+) requests in ([\d.]+)s", out).group(1))
    wall = float(re.search(r"(\d+) requests in ([\d.]+)s", out).group(2))

    def lat(q):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    return n, wall, lat(50), lat(99)


def http_cluster(build, n, step_us):
    port = itest.free_port()
    c = Cluster(build, n, "least_loaded", step_us=step_us,
                coord_args=("--http-port", str(port), "--auth=false", "--log-level", "warn"))
    return c, f"http://127.0.0.1:{port}/v1/completions"


def overhead(build, model):
    c, url = http_cluster(build, 1, 100)
    try:
        wrk(url, 1, 2, BODY)  # warm-up
        n_rpc = 3000
        reqs = [one_token(i) for i in range(n_rpc)]
        load(build, c.rpc, reqs[:300], 1)
        t = cpu_s(c.coord.p.pid)
        via = load(build, c.rpc, reqs, 1)
        cpu_rpc = (cpu_s(c.coord.p.pid) - t) / n_rpc
        v = [r["e2e_ms"] for r in via["results"]]
        t = cpu_s(c.coord.p.pid)
        n, wall, p50, p99 = wrk(url, 1, 10, BODY)
        cpu_http = (cpu_s(c.coord.p.pid) - t) / n
        print("### HTTP overhead over RPC (1 synthetic worker, 1-token requests, one at a time)\n")
        print("| path | requests | p50 ms | p99 ms | coordinator CPU us/request |")
        print("|---|---|---|---|---|")
        print(f"| RPC (llm-load, NNG) | {n_rpc} | {pct(v, 50):.3f} | {pct(v, 99):.3f} | "
              f"{cpu_rpc * 1e6:.0f} |")
        print(f"| HTTP (wrk, keep-alive) | {n} | {p50:.3f} | {p99:.3f} | {cpu_http * 1e6:.0f} |")
        print(f"| HTTP minus RPC | | {p50 - pct(v, 50):+.3f} | {p99 - pct(v, 99):+.3f} | "
              f"{(cpu_http - cpu_rpc) * 1e6:+.0f} |\n")
    finally:
        c.stop()


def rate(build, model):
    c, url = http_cluster(build, 4, 0)
    try:
        print("### Sustained rate, 1-token requests (4 synthetic workers, closed loop, "
              "everything on the same cores)\n")
        print("| path | concurrency | requests | req/s | p50 ms | p99 ms | "
              "coordinator CPU us/request |")
        print("|---|---|---|---|---|---|---|")
        wrk(url, 16, 2, BODY)  # warm-up
        for conc in (16, 64):
            t = cpu_s(c.coord.p.pid)
            n, wall, p50, p99 = wrk(url, conc, 10, BODY)
            cpu = cpu_s(c.coord.p.pid) - t
            print(f"| HTTP | {conc} | {n} | {n / wall:.0f} | {p50:.2f} | {p99:.2f} | "
                  f"{cpu / n * 1e6:.0f} |")
            n = 20000
            t = cpu_s(c.coord.p.pid)
            out = load(build, c.rpc, [one_token(i) for i in range(n)], conc)
            cpu = cpu_s(c.coord.p.pid) - t
            e = [r["e2e_ms"] for r in out["results"]]
            print(f"| RPC | {conc} | {n} | {n / out['wall_s']:.0f} | {pct(e, 50):.2f} | "
                  f"{pct(e, 99):.2f} | {cpu / n * 1e6:.0f} |")
        print()
    finally:
        c.stop()


QUESTIONS = ["Tell me about the ocean.", "Describe a mountain village.", "What is a robot?",
             "Why do people drink coffee?", "Describe the moon at night.",
             "What happens on rainy days?", "Describe a quiet library.", "Why are trains fun?"]


def stream_one(client, name, q, max_tokens, out):
    t0 = time.perf_counter()
    times = []
    s = client.chat.completions.create(model=name, stream=True, max_tokens=max_tokens,
                                       temperature=0,
                                       messages=[{"role": "user", "content": q}],
                                       stream_options={"include_usage": True})
    usage = None
    for ch in s:
        if ch.choices and ch.choices[0].delta.content:
            times.append(time.perf_counter())
        if ch.usage:
            usage = ch.usage
    out.append({"ttft_ms": (times[0] - t0) * 1000 if times else None,
                "itl_ms": [(b - a) * 1000 for a, b in zip(times, times[1:])],
                "tokens": usage.completion_tokens if usage else 0,
                "wall_s": time.perf_counter() - t0})


def stream(build, model):
    import openai
    name = os.path.basename(model)[:-len(".gguf")]
    port = itest.free_port()
    rpc, reg = f"tcp://127.0.0.1:{itest.free_port()}", f"tcp://127.0.0.1:{itest.free_port()}"
    d = os.path.join(build, "bench-http")
    os.makedirs(d, exist_ok=True)
    coord = itest.Server([os.path.join(build, "coordinator", "llm-coordinator"), "--listen", rpc,
                          "--register-listen", reg, "--http-port", str(port), "--auth=false",
                          "--models", f"{name} tokenizer={model}"],
                         os.path.join(d, "coordinator.log"), log_level="warn")
    w = itest.Server([os.path.join(build, "worker", "llm-worker"), "--model", model, "--listen",
                      f"tcp://127.0.0.1:{itest.free_port()}", "--coordinator", reg,
                      "--worker-id", "w1", "--threads", "2", "--kv-memory-mb", "256"],
                     os.path.join(d, "worker.log"), log_level="warn")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                           max_retries=0)
    try:
        if not itest.wait_until(lambda: client.models.list() and _ready(port), 120, 0.2):
            raise RuntimeError("the worker did not become ready")
        print(f"### Streamed chats through HTTP, {name} (1 worker, 2 threads; greedy, "
              "64 tokens each; client: the openai package)\n")
        print("| concurrent streams | requests | TTFT p50 ms | TTFT p90 ms | ITL p50 ms | "
              "ITL p90 ms | aggregate tok/s |")
        print("|---|---|---|---|---|---|---|")
        for conc, rounds in ((1, 8), (8, 3)):
            stream_one(client, name, QUESTIONS[0], 8, [])  # warm-up
            out = []
            t0 = time.perf_counter()
            for r in range(rounds):
                th = [threading.Thread(target=stream_one,
                                       args=(client, name, QUESTIONS[(r + i) % len(QUESTIONS)],
                                             64, out)) for i in range(conc)]
                for t in th:
                    t.start()
                for t in th:
                    t.join()
            wall = time.perf_counter() - t0
            ttft = [o["ttft_ms"] for o in out if o["ttft_ms"] is not None]
            itl = [x for o in out for x in o["itl_ms"]]
            toks = sum(o["tokens"] for o in out)
            print(f"| {conc} | {len(out)} | {pct(ttft, 50):.1f} | {pct(ttft, 90):.1f} | "
                  f"{pct(itl, 50):.1f} | {pct(itl, 90):.1f} | {toks / wall:.0f} |")
        print()
    finally:
        w.kill()
        coord.stop()


def _ready(port):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return json.loads(r.read())["workers_ready"] > 0
    except Exception:
        return False


def main():
    build, model = sys.argv[1], sys.argv[2]
    for w in sys.argv[3:] or ["overhead", "rate", "stream"]:
        globals()[w](build, model)


if __name__ == "__main__":
    main()
