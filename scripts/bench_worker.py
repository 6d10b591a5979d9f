"""bench_worker.py - serving figures for one llm-worker on the default model, through its own
protocol (NNG + protobuf, driven by llm-load), as docs/BENCHMARKS.md reports them:

  - aggregate generated tok/s and time per output token at 1, 4, 16 and 64 concurrent streams
  - TTFT of a 64-token prompt alone, of a 1,000-token prompt alone and while 16 streams decode
  - TTFT of a request whose 500-token prefix is cached vs computed

Usage: python3 scripts/bench_worker.py BUILD_DIR MODEL [THREADS]   (run by scripts/bench.sh worker)
"""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import itest  # noqa: E402

TOPICS = ["the ocean", "mountains", "a small robot", "coffee", "the moon", "rainy days",
          "a library", "trains", "music", "gardening", "winter", "a lighthouse", "bicycles",
          "the desert", "honeybees", "a city at night"]
WORDS = ("river stone light garden paper window music cloud bridge forest lantern harbor "
         "valley meadow thunder candle mirror silver orchard compass").split()


def load(build, addr, reqs, concurrency=None):
    cmd = [os.path.join(build, "client", "llm-load"), "--addr", addr]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    p = subprocess.run(cmd + ["-"], input=json.dumps({"requests": reqs}).encode(),
                       capture_output=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode()[-2000:])
    out = json.loads(p.stdout)
    if out["failed"]:
        raise RuntimeError(json.dumps([r for r in out["results"] if not r["ok"]])[:1000])
    return out


def story(i, max_tokens=128):
    return {"messages": [{"role": "user", "content":
                          f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."}],
            "max_tokens": max_tokens, "temperature": 0.7, "seed": i}


def filler(n_words, salt=0):
    """n_words of prose-like filler; a different salt changes the first word, so no two
    salts share a cached prefix."""
    return f"Note {salt}: " + " ".join(WORDS[(i * 7 + salt) % len(WORDS)]
                                       for i in range(n_words))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    build, model = sys.argv[1], sys.argv[2]
    threads = sys.argv[3] if len(sys.argv) > 3 else "2"
    addr = f"tcp://127.0.0.1:{itest.free_port()}"
    log = os.path.join(build, "bench-worker.log")
    w = itest.Server([os.path.join(build, "worker", "llm-worker"), "--model", model,
                      "--listen", addr, "--threads", threads, "--kv-memory-mb", "2048",
                      "--max-running", "64"], log, log_level="warn")
    try:
        load(build, addr, [story(0, 16)])  # warm-up: page the weights in
        print("| streams | generated tokens | wall s | aggregate tok/s | TPOT p50 ms | "
              "TPOT p90 ms | TTFT p50 ms |")
        print("|---|---|---|---|---|---|---|")
        for n in (1, 4, 16, 64):
            out = load(build, addr, [story(i) for i in range(n)])
            res = out["results"]
            tpot = [r["tpot_ms"] for r in res if r["tpot_ms"] > 0]
            ttft = [r["ttft_ms"] for r in res]
            print(f"| {n} | {out['generated_tokens']} | {out['wall_s']:.2f} | "
                  f"{out['tok_per_s']:.0f} | {statistics.median(tpot):.1f} | "
                  f"{pct(tpot, 90):.1f} | {statistics.median(ttft):.0f} |")

        def ttft_of(req, runs=3):
            return statistics.median(load(build, addr, [req])["results"][0]["ttft_ms"]
                                     for _ in range(runs))

        short = {"prompt": filler(59, 1), "max_tokens": 4}  # ~64 tokens
        long_ = {"prompt": filler(760, 2), "max_tokens": 4}
        n_short = load(build, addr, [dict(short, max_tokens=1)])["results"][0]["usage"]
        n_long = load(build, addr, [dict(long_, max_tokens=1)])["results"][0]["usage"]
        # Salt every run so the prefix cache never helps these.
        t64 = statistics.median(load(build, addr, [dict(short, prompt=filler(59, 10 + k))])
                                ["results"][0]["ttft_ms"] for k in range(3))
        t1k = statistics.median(load(build, addr, [dict(long_, prompt=filler(760, 20 + k))])
                                ["results"][0]["ttft_ms"] for k in range(3))
        busy = [story(100 + i, 256) for i in range(16)]
        busy.append(dict(long_, prompt=filler(760, 40), start_ms=1500))
        out = load(build, addr, busy)
        t1k_busy = out["results"][-1]["ttft_ms"]
        print()
        print(f"TTFT, {n_short['prompt_tokens']}-token prompt alone: {t64:.0f} ms")
        print(f"TTFT, {n_long['prompt_tokens']}-token prompt alone: {t1k:.0f} ms; "
              f"while 16 streams decode: {t1k_busy:.0f} ms ({t1k_busy / t1k:.1f}x)")

        prefix = filler(380, 3)
        cold = load(build, addr, [{"prompt": prefix + " Question one: what comes next?",
                                   "max_tokens": 4}])["results"][0]
        warm = load(build, addr, [{"prompt": prefix + " Question two: and after that?",
                                   "max_tokens": 4}])["results"][0]
        print(f"Prefix reuse, {cold['usage']['prompt_tokens']}-token prompt sharing "
              f"{warm['usage']['cached_tokens']} cached tokens: TTFT {cold['ttft_ms']:.0f} ms "
              f"computed, {warm['ttft_ms']:.0f} ms reused "
              f"({cold['ttft_ms'] / max(warm['ttft_ms'], 1e-3):.1f}x)")
    finally:
        w.stop()


if __name__ == "__main__":
    main()
