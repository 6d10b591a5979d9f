"""bench_serve.py - serving figures and plots on the default model, through the
coordinator's OpenAI HTTP API, measured with llm-bench (issue "Serving benchmark"):

  - latency percentiles (TTFT, E2E) against the offered request rate (open loop, Poisson)
  - output throughput against concurrency (closed loop)
  - the TTFT distribution (CDF) at one rate

One coordinator and one worker (2 threads) on this machine; llm-bench on the same cores.
Prompts: tests/data/bench_prompts.jsonl. Writes Markdown tables to stdout, the raw
llm-bench JSON under build/bench-serve/, and PNG plots (gnuplot) to docs/img/.

Usage: python3 scripts/bench_serve.py BUILD_DIR MODEL [--plot-only]
(run by scripts/bench.sh serve; --plot-only redraws the PNGs from the last run's data)
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import itest  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DATA = os.path.join(ROOT, "tests", "data", "bench_prompts.jsonl")
IMG = os.path.join(ROOT, "docs", "img")
RATES = [0.5, 1, 2, 4, 8]
CONCURRENCY = [1, 2, 4, 8, 16]
SLO = "* ttft_ms=1000 tpot_ms=100"


def llm_bench(build, out_dir, url, model, name, *load):
    out = os.path.join(out_dir, f"{name}.json")
    cmd = [os.path.join(build, "client", "llm-bench"), "--url", url, "--model", model,
           "--dataset", DATA, "--slo", SLO, "--per-request", "--json", out, *load]
    p = subprocess.run(cmd, capture_output=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"llm-bench {' '.join(load)}: rc={p.returncode} "
                           f"{p.stderr.decode()[-2000:]}")
    with open(out) as f:
        return json.load(f)


def gnuplot(script):
    p = subprocess.run(["gnuplot"], input=script.encode(), capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"gnuplot: {p.stderr.decode()}")


def main():
    build, model = sys.argv[1], sys.argv[2]
    name = os.path.basename(model)[:-len(".gguf")]
    out_dir = os.path.join(build, "bench-serve")
    if sys.argv[3:] == ["--plot-only"]:
        with open(os.path.join(out_dir, "cdf_rate")) as f:
            return plot(out_dir, name, f.read().strip())
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(IMG, exist_ok=True)
    port = itest.free_port()
    rpc, reg = f"tcp://127.0.0.1:{itest.free_port()}", f"tcp://127.0.0.1:{itest.free_port()}"
    coord = itest.Server([os.path.join(build, "coordinator", "llm-coordinator"), "--listen", rpc,
                          "--register-listen", reg, "--http-port", str(port), "--auth=false",
                          "--models", f"{name} tokenizer={model}", "--log-level", "warn"],
                         os.path.join(out_dir, "coordinator.log"), log_level="warn")
    worker = itest.Server([os.path.join(build, "worker", "llm-worker"), "--model", model,
                           "--listen", f"tcp://127.0.0.1:{itest.free_port()}", "--coordinator",
                           reg, "--worker-id", "w1", "--threads", "2", "--kv-memory-mb", "512",
                           "--log-level", "warn"],
                          os.path.join(out_dir, "worker.log"), log_level="warn")
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def ready():
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    return json.loads(r.read())["workers_ready"] > 0
            except Exception:
                return False
        if not itest.wait_until(ready, 120, 0.2):
            raise RuntimeError("the worker did not become ready")
        llm_bench(build, out_dir, url, name, "warmup", "--concurrency", "2", "--num-requests", "4")

        print(f"### Latency against request rate ({name}, 1 worker, 2 threads; open loop, "
              "Poisson arrivals, 40 requests a rate)\n")
        print("| offered req/s | achieved req/s | output tok/s | TTFT p50 | TTFT p90 | TTFT p99 | "
              "TPOT p50 | E2E p50 | E2E p99 | goodput (TTFT ≤ 1 s, TPOT ≤ 100 ms) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        rate_rows = []
        for rate in RATES:
            r = llm_bench(build, out_dir, url, name, f"rate-{rate}", "--rate", str(rate),
                          "--num-requests", "40")
            rate_rows.append((rate, r))
            print(f"| {rate} | {r['request_throughput']:.2f} | {r['output_tok_per_s']:.0f} | "
                  f"{r['ttft_ms']['p50']:.0f} | {r['ttft_ms']['p90']:.0f} | "
                  f"{r['ttft_ms']['p99']:.0f} | {r['tpot_ms']['p50']:.1f} | "
                  f"{r['e2e_ms']['p50']:.0f} | {r['e2e_ms']['p99']:.0f} | "
                  f"{r['goodput']['fraction'] * 100:.0f}% |")
            sys.stdout.flush()
        print("\n(milliseconds)\n")

        print(f"### Throughput against concurrency ({name}, closed loop, 48 requests a row)\n")
        print("| concurrency | req/s | output tok/s | TTFT p50 ms | TPOT p50 ms | E2E p50 ms |")
        print("|---|---|---|---|---|---|")
        conc_rows = []
        for c in CONCURRENCY:
            r = llm_bench(build, out_dir, url, name, f"conc-{c}", "--concurrency", str(c),
                          "--num-requests", "48")
            conc_rows.append((c, r))
            print(f"| {c} | {r['request_throughput']:.2f} | {r['output_tok_per_s']:.0f} | "
                  f"{r['ttft_ms']['p50']:.0f} | {r['tpot_ms']['p50']:.1f} | "
                  f"{r['e2e_ms']['p50']:.0f} |")
            sys.stdout.flush()
        print()
    finally:
        worker.stop()
        coord.stop()

    # Plots.
    with open(os.path.join(out_dir, "rate.dat"), "w") as f:
        for rate, r in rate_rows:
            f.write(f"{rate} {r['ttft_ms']['p50']} {r['ttft_ms']['p90']} {r['ttft_ms']['p99']} "
                    f"{r['e2e_ms']['p50']} {r['e2e_ms']['p90']} {r['e2e_ms']['p99']}\n")
    with open(os.path.join(out_dir, "conc.dat"), "w") as f:
        for c, r in conc_rows:
            f.write(f"{c} {r['output_tok_per_s']} {r['request_throughput']}\n")
    cdf_rate, cdf = rate_rows[len(rate_rows) // 2]
    with open(os.path.join(out_dir, "cdf_rate"), "w") as f:
        f.write(str(cdf_rate))
    ttfts = sorted(x["ttft_ms"] for x in cdf["requests"] if x.get("ok") and
                   x.get("ttft_ms") is not None)
    with open(os.path.join(out_dir, "ttft_cdf.dat"), "w") as f:
        for i, t in enumerate(ttfts):
            f.write(f"{t} {(i + 1) / len(ttfts)}\n")
    plot(out_dir, name, cdf_rate)


def plot(out_dir, name, cdf_rate):
    """The three PNGs from the .dat files main() wrote (--plot-only redraws them)."""
    common = ("set terminal pngcairo size 800,500 font 'sans,10'\nset termoption noenhanced\n"
              "set grid\nset key top left\n")
    gnuplot(common + f"""set output '{IMG}/latency_vs_rate.png'
set title 'Latency against request rate ({name}, 1 worker, 2 threads)'
set xlabel 'offered request rate (req/s)'
set ylabel 'milliseconds (log scale)'
set logscale x 2
set logscale y 10
plot '{out_dir}/rate.dat' u 1:2 w lp t 'TTFT p50', '' u 1:3 w lp t 'TTFT p90', \\
     '' u 1:4 w lp t 'TTFT p99', '' u 1:5 w lp t 'E2E p50', '' u 1:7 w lp t 'E2E p99'
""")
    gnuplot(common + f"""set output '{IMG}/throughput_vs_concurrency.png'
set title 'Output throughput against concurrency ({name}, closed loop)'
set xlabel 'concurrent requests'
set ylabel 'output tokens/s'
set logscale x 2
plot '{out_dir}/conc.dat' u 1:2 w lp t 'output tok/s'
""")
    gnuplot(common + f"""set output '{IMG}/ttft_cdf.png'
set title 'TTFT distribution at {cdf_rate} req/s ({name})'
set xlabel 'TTFT (ms)'
set ylabel 'fraction of requests'
set yrange [0:1]
plot '{out_dir}/ttft_cdf.dat' u 1:2 w steps t 'CDF'
""")
    print("Plots: docs/img/latency_vs_rate.png, docs/img/throughput_vs_concurrency.png, "
          "docs/img/ttft_cdf.png\n")


if __name__ == "__main__":
    main()
