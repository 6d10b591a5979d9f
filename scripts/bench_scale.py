"""bench_scale.py - the cluster-scale simulation (issue "Serving benchmark"): one
coordinator and many synthetic workers on this machine, driven with llm-bench at
increasing open-loop request rates, to see how much one coordinator can route.

For each offered rate it reports the achieved request rate, latency percentiles, the
coordinator's CPU time per request (utime + stime from /proc over the run), and the
imbalance of the requests routed across the workers (max share / mean share - 1, from
llm_coord_routed_total); then the rate at which the coordinator saturates (the first
rate it cannot sustain within 5%, or whose p99 is more than 4x the lightest load's), and
llm-route-bench's routing-decision time at the simulated worker count.

Everything shares this machine's cores: the workers' own (idle) threads, the load
generator and the coordinator. The figures are therefore a floor for a coordinator with
a machine to itself; docs/scaling.md turns them into an estimate.

Usage: [LLM_SCALE_MAX_TOKENS=N] python3 scripts/bench_scale.py BUILD_DIR [WORKERS] [RATES...]
(run by scripts/bench.sh scale; defaults 128 workers, rates 250 500 1000 2000 4000 8000)
Writes build/bench-scale/scale.json and prints a Markdown table.
"""
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import itest  # noqa: E402
from bench_coord import Cluster, cpu_s  # noqa: E402

DURATION_S = 8


def routed(c):
    return c.routed()


def imbalance(before, after):
    d = [after.get(w, 0) - before.get(w, 0) for w in after]
    if not d or sum(d) == 0:
        return float("nan")
    mean = sum(d) / len(d)
    return max(d) / mean - 1


def dataset(path, max_tokens, n=200):
    """Short prompts; 1-4 output tokens (the per-request cost), or max_tokens each."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"scale request {i} " + "x" * (i % 64),
                                "max_tokens": max_tokens or 1 + i % 4}) + "\n")


def bench(build, addr, data, rate, seconds):
    out = os.path.join(os.path.dirname(data), f"rate-{rate}.json")
    cmd = [os.path.join(build, "client", "llm-bench"), "--addr", addr, "--dataset", data,
           "--rate", str(rate), "--duration-s", str(seconds), "--max-concurrency", "512",
           "--json", out]
    p = subprocess.run(cmd, capture_output=True, timeout=seconds + 120)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"llm-bench rc={p.returncode}: {p.stderr.decode()[-2000:]}")
    with open(out) as f:
        return json.load(f)


def route_ns(build, n):
    # It times every policy at 32, 128 and 1,024 candidates.
    p = subprocess.run([os.path.join(build, "coordinator", "llm-route-bench"), "--reps", "3"],
                       capture_output=True, timeout=300)
    return p.stdout.decode().strip()


def main():
    build = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    rates = [int(r) for r in sys.argv[3:]] or [250, 500, 1000, 2000, 4000, 8000]
    d = os.path.join(build, "bench-scale")
    os.makedirs(d, exist_ok=True)
    data = os.path.join(d, "prompts.jsonl")
    max_tokens = int(os.environ.get("LLM_SCALE_MAX_TOKENS", "0"))
    dataset(data, max_tokens)
    t0 = time.time()
    c = Cluster(build, n, "least_loaded", step_us=200, run_dir=d)
    print(f"### Scale: 1 coordinator, {n} synthetic workers (started in "
          f"{time.time() - t0:.1f}s), open-loop Poisson arrivals, {DURATION_S} s per rate, "
          f"{max_tokens or '1-4'} output tokens a request\n")
    print("| offered req/s | achieved req/s | failed | e2e p50 ms | e2e p99 ms | "
          "coordinator CPU us/request | us/output token | cores: coordinator / workers / "
          "llm-bench | imbalance |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    try:
        bench(build, c.rpc, data, 100, 2)  # warm-up: every worker connected and routed
        for rate in rates:
            before = routed(c)
            cpu0, w0 = cpu_s(c.coord.p.pid), time.time()
            wk0 = sum(cpu_s(w.p.pid) for w in c.workers)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = bench(build, c.rpc, data, rate, DURATION_S)
            cpu = cpu_s(c.coord.p.pid) - cpu0
            wall = time.time() - w0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            gen = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            wk = sum(cpu_s(w.p.pid) for w in c.workers) - wk0
            imb = imbalance(before, routed(c))
            done = max(r["completed"], 1)
            row = {"offered": rate, "achieved": r["request_throughput"], "failed": r["failed"],
                   "p50_ms": r["e2e_ms"]["p50"], "p99_ms": r["e2e_ms"]["p99"],
                   "cpu_us_per_request": cpu / done * 1e6, "cores": cpu / wall,
                   "workers_cores": wk / wall, "loadgen_cores": gen / wall, "imbalance": imb,
                   "cpu_us_per_token": cpu / max(r["output_tokens"], 1) * 1e6}
            rows.append(row)
            print(f"| {rate} | {row['achieved']:.0f} | {row['failed']} | {row['p50_ms']:.2f} | "
                  f"{row['p99_ms']:.2f} | {row['cpu_us_per_request']:.0f} | "
                  f"{row['cpu_us_per_token']:.1f} | "
                  f"{row['cores']:.2f} / {row['workers_cores']:.2f} / {row['loadgen_cores']:.2f} | "
                  f"{imb * 100:.1f}% |")
            sys.stdout.flush()
    finally:
        c.stop()
    base_p99 = rows[0]["p99_ms"] if rows else 0
    sat = next((x["offered"] for x in rows
                if x["achieved"] < 0.95 * x["offered"] or x["failed"] > 0 or
                x["p99_ms"] > 4 * base_p99), None)
    print(f"\nSaturation: {'first at ' + str(sat) + ' req/s offered' if sat else 'not reached'}"
          f"; highest achieved {max((x['achieved'] for x in rows), default=0):.0f} req/s.\n")
    print("Routing decision time (llm-route-bench, ns per decision):\n")
    print(route_ns(build, n) + "\n")
    with open(os.path.join(d, "scale.json"), "w") as f:
        json.dump({"workers": n, "rows": rows, "saturation_offered": sat}, f, indent=1)


if __name__ == "__main__":
    main()
