"""test_bench.py - llm-bench, the serving benchmark, against a coordinator (HTTP front door,
auth off) with 2 synthetic workers on loopback.

serve: a closed loop over HTTP chat, an open loop of Poisson arrivals over HTTP
completions and a closed loop over the RPC (with warm-up), each for a few seconds; every
JSON report is checked for consistency: completed + failed == requests listed, no failure,
p50 <= p90 <= p99 and each mean within the [min, max] of the per-request values, token
totals equal to the per-request sums and to the max_tokens of the dataset lines used
(synthetic workers generate exactly max_tokens), throughputs equal to totals / duration,
no request issued after --duration-s, goodput 1.0 under a lax SLO and 0 under an
impossible one (ttft_ms=0.001); the same --seed gives the same arrival times; an unknown
model is counted under its HTTP status (404) and the run exits 1.
bad_input: a missing dataset file and a malformed line (exit 2, the message names the
file and line), contradictory flags (exit 2), --help (exit 0, lists the flags), an
unreachable URL (exit 1, every request counted as failed).
Until the coordinator binary exists the whole test is skipped (77).
"""
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import itest  # noqa: E402
from test_coordinator import ROOT, run_sections  # noqa: E402
from test_http import start_coord, stop_all, wait_health  # noqa: E402

PROMPTS = os.path.join(ROOT, "tests", "data", "bench_prompts.jsonl")
SHARED = os.path.join(ROOT, "tests", "data", "bench_shared_prefix.jsonl")
M = "syn-bench"


def lines(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


STDERRS = []


def bench(ctx, *flags, timeout_s=300):
    """Runs llm-bench with --json - : (rc, report or None, stdout, stderr)."""
    cmd = [ctx.args.bench, "--json", "-", *map(str, flags)]
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, None, "", f"llm-bench ran past {timeout_s}s"
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    STDERRS.append(err)
    try:
        rep = json.loads(out)
    except ValueError:
        rep = None
    return p.returncode, rep, out, err


def close(a, b, rel=1e-6):
    return a is not None and b is not None and abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def consistent(res, name, rep, dataset, warmup=0, duration_s=None):
    """The checks every report passes; returns the per-request list."""
    reqs = rep.get("requests", [])
    n = rep["completed"] + rep["failed"]
    res.check(f"{name}: completed + failed == requests listed, none failed",
              n == len(reqs) and n > 0 and rep["failed"] == 0 and rep["errors"] == {},
              f"completed={rep['completed']} failed={rep['failed']} listed={len(reqs)} "
              f"errors={rep['errors']}")
    for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        s = rep[m]
        ok = all(s[k] is not None for k in ("mean", "p50", "p90", "p99")) and \
            s["p50"] <= s["p90"] <= s["p99"]
        per = [r[m] for r in reqs if r.get(m) is not None] if m != "itl_ms" else None
        if ok and per:
            ok = min(per) - 1e-9 <= s["mean"] <= max(per) + 1e-9 and \
                min(per) - 1e-9 <= s["p50"] and s["p99"] <= max(per) + 1e-9
        res.check(f"{name}: {m} percentiles ordered, mean within [min, max]", ok, json.dumps(s))
    out_sum = sum(r["output_tokens"] for r in reqs)
    in_sum = sum(r["input_tokens"] for r in reqs)
    want = [dataset[(warmup + k) % len(dataset)].get("max_tokens", 64) for k in range(len(reqs))]
    res.check(f"{name}: output_tokens == sum per request == the max_tokens of the lines used",
              rep["output_tokens"] == out_sum == sum(want) and
              [r["output_tokens"] for r in reqs] == want,
              f"{rep['output_tokens']} {out_sum} {sum(want)}")
    res.check(f"{name}: input_tokens == sum per request, each > 0",
              rep["input_tokens"] == in_sum and all(r["input_tokens"] > 0 for r in reqs),
              f"{rep['input_tokens']} {in_sum}")
    d = rep["duration_s"]
    res.check(f"{name}: throughputs are totals / duration",
              d > 0 and close(rep["request_throughput"], rep["completed"] / d) and
              close(rep["output_tok_per_s"], rep["output_tokens"] / d) and
              close(rep["input_tok_per_s"], rep["input_tokens"] / d), json.dumps(rep)[:400])
    starts = [r["start_ms"] for r in reqs]
    res.check(f"{name}: requests listed in the order they were scheduled",
              starts == sorted(starts) and starts[0] >= 0, str(starts[:10]))
    if duration_s:
        res.check(f"{name}: no request scheduled after --duration-s",
                  starts[-1] < duration_s * 1000 and d >= duration_s * 0.9,
                  f"last start {starts[-1]} ms, duration {d} s")
    for r in reqs:
        if r["output_tokens"] >= 2 and not close(
                r["tpot_ms"], (r["e2e_ms"] - r["ttft_ms"]) / (r["output_tokens"] - 1), 1e-6):
            res.check(f"{name}: tpot_ms == (e2e - ttft) / (output_tokens - 1)", False, str(r))
            break
    else:
        res.check(f"{name}: tpot_ms == (e2e - ttft) / (output_tokens - 1)", True)
    g = rep["goodput"]
    by = g["by_tier"]
    tiers = {}
    for r in reqs:
        tiers[r["tier"]] = tiers.get(r["tier"], 0) + 1
    res.check(f"{name}: goodput fraction in [0, 1], by_tier counts match the requests",
              0 <= g["fraction"] <= 1 and {t: v["completed"] for t, v in by.items()} == tiers and
              all(0 <= v["fraction"] <= 1 and v["good"] <= v["completed"] for v in by.values()) and
              close(g["req_per_s"], sum(v["good"] for v in by.values()) / d),
              json.dumps(g))
    return reqs


# ---- 1. against a coordinator with 2 synthetic workers ---------------------------------------
def serve(ctx, res):
    quick = ctx.args.quick
    coord, rpc, reg = start_coord(ctx, "coord-bench", [f"{M} tokenizer=synthetic "
                                                       "policy=least_loaded"])
    W = [ctx.worker(f"bw-{i}", reg, M, step_us=1000) for i in (1, 2)]
    if not res.check("serve: 2 workers ready (/health)", wait_health(coord.http, 2)):
        return
    url = f"http://127.0.0.1:{coord.http}"
    prompts, shared = lines(PROMPTS), lines(SHARED)
    dur = 1 if quick else 3

    # Closed loop, HTTP chat, a lax SLO: every request is good.
    rc, rep, out, err = bench(ctx, "--url", url, "--model", M, "--dataset", PROMPTS,
                              "--concurrency", 4, "--duration-s", dur, "--per-request",
                              "--slo", "* ttft_ms=60000 tpot_ms=60000 e2e_ms=60000",
                              "--slo", "critical ttft_ms=60000")
    if res.check("closed/chat: exit 0, JSON on stdout, the table on stderr",
                 rc == 0 and rep is not None and "Serving Benchmark Result" in err and
                 "Goodput" in err, f"rc={rc} {err[-1500:]}"):
        consistent(res, "closed/chat", rep, prompts, duration_s=dur)
        g = rep["goodput"]
        res.check("closed/chat: a lax SLO: goodput fraction 1.0, = request throughput",
                  g["fraction"] == 1.0 and close(g["req_per_s"], rep["request_throughput"]) and
                  rep["goodput"]["by_tier"]["critical"]["slo"] == {"ttft_ms": 60000} and
                  rep["goodput"]["by_tier"]["normal"]["slo"] ==
                  {"ttft_ms": 60000, "tpot_ms": 60000, "e2e_ms": 60000}, json.dumps(g))
        res.check("closed/chat: the config is echoed, HTTP 200 per request",
                  rep["config"]["concurrency"] == 4 and rep["config"]["api"] == "chat" and
                  all(r["status"] == 200 and r["error"] is None for r in rep["requests"]),
                  json.dumps(rep["config"]))
        print("\n".join(err.splitlines()[:45]))  # the table, for the ctest log

    # Open loop, HTTP completions, Poisson arrivals; an impossible SLO: nothing is good.
    rate = 20 if quick else 40
    rc, rep, out, err = bench(ctx, "--url", url + "/v1", "--api", "completions", "--model", M,
                              "--dataset", PROMPTS, "--rate", rate, "--seed", 7,
                              "--max-concurrency", 16, "--duration-s", dur, "--per-request",
                              "--slo", "* ttft_ms=0.001")
    if res.check("open/completions: exit 0", rc == 0 and rep is not None,
                 f"rc={rc} {err[-1500:]}"):
        reqs = consistent(res, "open/completions", rep, prompts, duration_s=dur)
        n, lam = len(reqs), rate * dur
        res.check("open/completions: the number of arrivals fits a Poisson process "
                  "(within 5 sigma)", abs(n - lam) <= 5 * math.sqrt(lam), f"{n} vs {lam}")
        g = rep["goodput"]
        res.check("open/completions: an impossible SLO (ttft_ms=0.001): goodput 0",
                  g["fraction"] == 0 and g["req_per_s"] == 0 and
                  all(v["good"] == 0 for v in g["by_tier"].values()), json.dumps(g))
    # The same seed gives the same schedule (a burst at a high rate, so it is short).
    runs = [bench(ctx, "--url", url, "--model", M, "--dataset", PROMPTS, "--rate", 500,
                  "--seed", 11, "--num-requests", 20, "--per-request") for _ in range(2)]
    other = bench(ctx, "--url", url, "--model", M, "--dataset", PROMPTS, "--rate", 500,
                  "--seed", 12, "--num-requests", 20, "--per-request")
    ok = all(r[0] == 0 and r[1] for r in runs + [other])
    st = [[q["start_ms"] for q in r[1]["requests"]] if r[1] else None for r in runs + [other]]
    res.check("open loop: the same --seed schedules the same arrivals, another seed others",
              ok and st[0] == st[1] and st[0] != st[2] and len(st[0]) == 20 and st[0][0] == 0,
              f"{st}")

    # Closed loop over the RPC, shared-prefix prompts, with warm-up.
    n_rpc = 12 if quick else 40
    rc, rep, out, err = bench(ctx, "--addr", rpc, "--dataset", SHARED, "--concurrency", 4,
                              "--num-requests", n_rpc, "--warmup", 5, "--per-request",
                              "--slo", "* e2e_ms=60000")
    if res.check("closed/rpc: exit 0", rc == 0 and rep is not None, f"rc={rc} {err[-1500:]}"):
        reqs = consistent(res, "closed/rpc", rep, shared, warmup=5)
        res.check("closed/rpc: --num-requests requests, warm-up excluded, goodput 1.0",
                  len(reqs) == n_rpc and rep["completed"] == n_rpc and
                  rep["goodput"]["fraction"] == 1.0 and
                  all(r["status"] is None for r in reqs), f"{len(reqs)} {rep['goodput']}")

    # HTTP errors are counted by status; every request failing is exit 1.
    rc, rep, out, err = bench(ctx, "--url", url, "--model", "no-such-model", "--dataset",
                              PROMPTS, "--concurrency", 2, "--num-requests", 6)
    res.check("unknown model: exit 1, 6 failures counted under \"404\", a clear message",
              rc == 1 and rep and rep["failed"] == 6 and rep["completed"] == 0 and
              rep["errors"] == {"404": 6} and "6 of 6 requests failed" in err and
              rep["ttft_ms"]["p50"] is None, f"rc={rc} {out[:400]} {err[-600:]}")
    res.check("serve: llm-bench without sanitizer reports",
              not any(m in e for e in STDERRS for m in itest.SANITIZER_MARKS),
              # the runs' stderr that hold a report, whole (the tail of all of them lost it)
              "\n".join(e for e in STDERRS if any(m in e for m in itest.SANITIZER_MARKS))[-8000:])
    stop_all(ctx, res, "serve", coord, W)


# ---- 2. bad input ----------------------------------------------------------------------------
def bad_input(ctx, res):
    b = ctx.args.bench
    tmp = tempfile.mkdtemp(dir=ctx.tmp)

    def run(*flags):
        p = itest.run([b, *map(str, flags)], timeout_s=120)
        return p.rc, p.out.decode("utf-8", "replace"), p.err

    rc, out, err = run("--url", "http://127.0.0.1:9", "--model", "m", "--dataset",
                       os.path.join(tmp, "missing.jsonl"), "--concurrency", 1)
    res.check("a missing dataset: exit 2, the message names the file",
              rc == 2 and "missing.jsonl" in err and "No such file" in err, f"rc={rc} {err}")
    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"prompt": "fine", "max_tokens": 4}\n\n{"prompt": "x", "max_tokens": 0}\n')
    rc, out, err = run("--url", "http://127.0.0.1:9", "--model", "m", "--dataset", bad,
                       "--concurrency", 1)
    res.check("a malformed line: exit 2, the message names FILE:LINE",
              rc == 2 and f"{bad}:3:" in err and "max_tokens" in err, f"rc={rc} {err}")
    with open(bad, "w") as f:
        f.write('{"prompt": "fine"}\n{"prompt": "x" oops\n')
    rc, out, err = run("--url", "http://127.0.0.1:9", "--model", "m", "--dataset", bad,
                       "--concurrency", 1)
    res.check("a line that is not JSON: exit 2, FILE:2", rc == 2 and f"{bad}:2:" in err, err)
    for flags, why in (
            (["--model", "m", "--dataset", PROMPTS, "--concurrency", 1], "no target"),
            (["--url", "http://h:1", "--addr", "tcp://h:1", "--model", "m", "--dataset",
              PROMPTS, "--concurrency", 1], "two targets"),
            (["--url", "http://h:1", "--model", "m", "--dataset", PROMPTS], "no load shape"),
            (["--url", "http://h:1", "--model", "m", "--dataset", PROMPTS, "--rate", 2,
              "--concurrency", 1], "both rate and concurrency"),
            (["--url", "http://h:1", "--dataset", PROMPTS, "--concurrency", 1], "no model"),
            (["--url", "https://h:1", "--model", "m", "--dataset", PROMPTS, "--concurrency", 1],
             "https"),
            (["--url", "http://h:1", "--model", "m", "--dataset", PROMPTS, "--concurrency", 1,
              "--api", "embeddings"], "unknown api"),
            (["--url", "http://h:1", "--model", "m", "--dataset", PROMPTS, "--concurrency", 1,
              "--slo", "normal ttft=5"], "bad SLO"),
            (["--url", "http://h:1", "--model", "m", "--dataset", PROMPTS, "--concurrency", -1],
             "negative concurrency"),
            (["--bogus"], "unknown flag")):
        rc, out, err = run(*flags)
        res.check(f"bad flags ({why}): exit 2 with one error line",
                  rc == 2 and "llm-bench: error:" in err and not out, f"rc={rc} {err}")
    rc, out, err = run("--help")
    res.check("--help: exit 0, every flag listed",
              rc == 0 and all(f in out for f in (
                  "--url", "--addr", "--api", "--api-key", "--model", "--rate",
                  "--max-concurrency", "--concurrency", "--seed", "--num-requests",
                  "--duration-s", "--warmup", "--dataset", "--temperature", "--slo", "--json",
                  "per-request", "--timeout-s")), out[:300])
    port = ctx.port()  # free, nothing listens there
    rc, out, err = run("--url", f"http://127.0.0.1:{port}", "--model", "m", "--dataset",
                       PROMPTS, "--concurrency", 2, "--num-requests", 5, "--json", "-")
    try:
        rep = json.loads(out)
    except ValueError:
        rep = None
    res.check("an unreachable URL: exit 1, 5 failures counted, a clear error",
              rc == 1 and rep and rep["failed"] == 5 and rep["completed"] == 0 and
              sum(rep["errors"].values()) == 5 and "Connection refused" in err and
              rep["goodput"]["fraction"] == 0, f"rc={rc} {out[:300]} {err[-400:]}")
    res.check("bad input: no sanitizer reports", not any(m in err for m in
                                                         itest.SANITIZER_MARKS), err[-500:])


def main():
    ap = itest.parser(__doc__)
    ap.add_argument("--coordinator", required=True, help="path to llm-coordinator")
    ap.add_argument("--ctl", required=True, help="path to llmctl")
    ap.add_argument("--bench", required=True, help="path to llm-bench")
    ap.add_argument("--quick", action="store_true", help="shorter runs (sanitizer builds)")
    ap.add_argument("--only", default="serve,bad_input",
                    help="comma-separated sections to run (for debugging)")
    args = ap.parse_args()
    return run_sections(args, "llm-bench-", (serve, bad_input))


if __name__ == "__main__":
    sys.exit(main())
