"""test_worker_serve.py - llm-worker as a server, driven over NNG by real client processes.

On the default model: 32 concurrent streams (greedy and seeded sampling) give exactly the
tokens each gives alone; cancel mid-stream frees its KV blocks (seen through Stats); under a
tiny KV budget preemption still completes every request with the same output; a shared
200-token system prompt is prefilled once (cached tokens in usage); SIGTERM drains (the
running request finishes, new ones are refused, exit 0), and so does a Drain RPC (answered
with the worker's status; a Drain for another worker id is ENOENT). Failover resume: a
greedy and a seeded request sent again with their first k tokens as resume_ids go on
exactly as before (tokens, text from every cursor, finish, usage). Registration and
heartbeats go to a stand-in coordinator. Bad input - malformed, truncated and wrong-version envelopes,
unknown request ids, prompts past the context, max_tokens 0 or huge, unknown model, bad
sampling values, invalid UTF-8 - gets a clear error and the worker keeps serving.
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import itest  # noqa: E402

TOPICS = ["the ocean", "mountains", "a small robot", "coffee", "the moon", "rainy days",
          "a library", "trains", "music", "gardening", "winter", "a lighthouse", "bicycles",
          "the desert", "honeybees", "a city at night"]
SYSTEM = ("You are a meticulous assistant for a public library. " * 30).strip()


def load(args, addr, reqs, concurrency=None, timeout_s=600):
    cmd = [args.load, "--addr", addr] + (["--concurrency", str(concurrency)] if concurrency
                                         else []) + ["-"]
    p = subprocess.run(cmd, input=json.dumps({"requests": reqs}).encode(), capture_output=True,
                       timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError(f"llm-load failed: {p.stderr.decode()[-2000:]}")
    return json.loads(p.stdout)


def ctl(args, addr, *cmd, stdin=None):
    p = subprocess.run([args.ctl, "--addr", addr, *cmd], input=stdin, capture_output=True,
                       timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def metric(text, name):
    m = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def stats(args, addr):
    rc, out, err = ctl(args, addr, "stats")
    if rc != 0:
        raise RuntimeError(f"stats failed: {err}")
    return out


def wait_metric(args, addr, name, want, timeout_s=10):
    v = None
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        v = metric(stats(args, addr), name)
        if v == want:
            return v
        time.sleep(0.05)
    return v


def chat_req(i, max_tokens=24):
    topic = TOPICS[i % len(TOPICS)]
    r = {"messages": [{"role": "user", "content": f"Write two sentences about {topic}."}],
         "max_tokens": max_tokens}
    if i >= len(TOPICS):  # the second half samples, each with its own seed
        r.update(temperature=0.8, top_p=0.95, top_k=40, seed=1000 + i)
    return r


def start_worker(args, tmp, name, *extra):
    port = itest.free_port()
    addr = f"tcp://127.0.0.1:{port}"
    cmd = [args.worker, "--listen", addr, "--threads", str(args.threads), *extra]
    return itest.Server(cmd, os.path.join(tmp, f"{name}.log")), addr


# --- protobuf by hand, for the bytes no well-behaved client would send ------------------------
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def envelope(version, body_num, body, request_id=0):
    return field(1, 0, version) + (field(2, 0, request_id) if request_id else b"") + \
        field(body_num, 2, body)


def generate_body(prompt_bytes, max_tokens=4):
    sampling = field(5, 0, max_tokens)
    return field(2, 2, prompt_bytes) + field(5, 2, sampling)


def raw(args, addr, data):
    rc, out, err = ctl(args, addr, "raw", stdin=data)
    return out.strip() if rc == 0 else f"rc={rc} {err.strip()}"


def probe(args, addr, *cmd, timeout_s=120):
    """serve_probe: one Generate (resume_ids included; the stream then re-read from every
    cursor) or one Drain, as a dict."""
    p = subprocess.run([args.probe, addr, *cmd], capture_output=True, timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError(f"serve_probe failed: {p.stderr.decode()[-2000:]}")
    return json.loads(p.stdout)


def check_resume(res, args, addr, label, flags, prompt):
    """Runs prompt, then again with its first k tokens as resume_ids for k in 0, 1, n/2,
    n-1, n (a failover after k delivered tokens): read from k on it must give the original's
    tokens and text there, byte for byte, the same finish and usage, and read from every
    cursor 0..n (below k too) the original's stream."""
    orig = probe(args, addr, "generate", *flags, prompt)
    n = len(orig["ids"])
    if not res.check(f"{label}: the original stream completes",
                     orig["ok"] and n > 1 and orig["text"] == orig["from"][0]["text"],
                     json.dumps(orig)[:300]):
        return
    bad = []
    for k in sorted({0, 1, n // 2, n - 1, n}):
        ids = ",".join(str(i) for i in orig["ids"][:k])
        r = probe(args, addr, "generate", *flags, "--resume-ids", ids, prompt)
        if not (r["ok"] and r["ids"] == orig["ids"][k:] and
                r["text"] == orig["from"][k]["text"] and r["finish"] == orig["finish"] and
                r["usage"]["completion_tokens"] == n and r["from"] == orig["from"]):
            bad.append(f"k={k}: {json.dumps(r)[:300]}")
    res.check(f"{label}: resumed at k = 0, 1, n/2, n-1, n it goes on exactly as before",
              not bad, "; ".join(bad)[:900] or f"n={n} finish={orig['finish']}")


def main():
    ap = itest.parser(__doc__)
    ap.add_argument("--load", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--fake-coord", required=True)
    ap.add_argument("--probe", help="serve_probe (default: beside fake_coord)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer and shorter streams on the model (sanitizer builds)")
    args = ap.parse_args()
    args.probe = args.probe or os.path.join(os.path.dirname(args.fake_coord), "serve_probe")
    itest.check_binaries(args)
    res = itest.Results()
    if not res.check("serve_probe is built", os.access(args.probe, os.X_OK), args.probe):
        return res.finish()
    if not os.path.exists(args.model):
        res.skip("worker serving", f"model {args.model} not found (run scripts/setup.sh)")
        return res.finish()
    tmp = tempfile.mkdtemp(prefix="llm-serve-")

    # ---- synthetic engine: protocol, bad input, registration, drain -------------------------
    coord_port = itest.free_port()
    coord_addr = f"tcp://127.0.0.1:{coord_port}"
    coord_out = os.path.join(tmp, "coord.out")
    coord = itest.Server([args.fake_coord, coord_addr, "300", coord_out],
                         os.path.join(tmp, "coord.log"), ready_mark=b"listening")

    def coord_lines():
        with open(coord_out) as f:
            return f.read().splitlines()
    cfg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs",
                       "worker-synthetic.cfg")
    syn, saddr = start_worker(args, tmp, "synthetic", "--config", cfg,
                              "--synthetic-step-us", "1000", "--synthetic-ctx", "512",
                              "--coordinator", coord_addr, "--heartbeat-ms", "200",
                              "--worker-id", "syn-1")
    rc, out, _ = ctl(args, saddr, "health")
    res.check("health says ready", rc == 0 and out.strip() == "ready", out)

    # Deterministic tokens, many streams at once.
    # Synthetic tokens depend on (position, previous token): prompts that end differently
    # must diverge.
    reqs = [{"prompt": f"request {i} " + chr(ord("a") + i % 26), "max_tokens": 40}
            for i in range(64)]
    a = load(args, saddr, reqs)
    b = load(args, saddr, reqs)
    ok = a["failed"] == 0 and all(x["finish"] == "length" and len(x["ids"]) == 40
                                  for x in a["results"])
    res.check("synthetic: 64 concurrent streams complete", ok,
              json.dumps(a["results"][0])[:300])
    res.check("synthetic: tokens are deterministic",
              [x["ids"] for x in a["results"]] == [x["ids"] for x in b["results"]])
    res.check("synthetic: different prompts give different tokens",
              len({tuple(x["ids"]) for x in a["results"][:26]}) > 5)

    # Bad input: each a clear error, and the worker keeps serving.
    bad = [
        ("max_tokens 0", {"prompt": "hi", "max_tokens": 0}, 2, "max_tokens"),
        ("max_tokens huge", {"prompt": "hi", "max_tokens": 10**7}, 10, "max_tokens"),
        ("prompt past the context", {"prompt": "x" * 600, "max_tokens": 4}, 10, "context"),
        ("unknown model", {"prompt": "hi", "model": "gpt-9", "max_tokens": 4}, 8,
         "unknown model"),
        ("negative temperature", {"prompt": "hi", "temperature": -1, "max_tokens": 4}, 2,
         "temperature"),
        ("top_p above 1", {"prompt": "hi", "top_p": 2, "max_tokens": 4}, 2, "top_p"),
        ("too many stop strings", {"prompt": "hi", "stop": ["a"] * 9, "max_tokens": 4}, 2,
         "stop"),
        ("empty prompt", {"prompt": "", "max_tokens": 4}, 2, "empty"),
        ("bad chat role", {"messages": [{"role": "wizard", "content": "hi"}], "max_tokens": 4},
         2, "role"),
        ("prompt ids out of the vocabulary", {"prompt_ids": [1, 99999], "max_tokens": 4}, 2,
         "vocabulary"),
    ]
    out = load(args, saddr, [r for _, r, _, _ in bad])
    for (name, _, code, word), r in zip(bad, out["results"]):
        res.check(f"bad input: {name}", not r["ok"] and r["error_code"] == code and
                  word in r["error"].lower(), f"{r['error_code']} {r['error']!r}")
    good = b'\x08\x01' + field(16, 2, b"")  # Health, version 1
    cases = [
        ("garbage bytes", b"\xff\x13\x37garbage", r"^error 5 "),
        ("empty message", b"", r"^error 5 "),
        ("no body", b"\x08\x01", r"^error 5 .*no body"),
        ("wrong envelope version", b'\x08\x02' + field(16, 2, b""), r"^error 5 .*version"),
        ("truncated envelope", envelope(1, 10, generate_body(b"hello"))[:-3], r"^error 5 "),
        ("invalid UTF-8 prompt", envelope(1, 10, generate_body(b"caf\xc3")), r"^error 2 .*UTF-8"),
        ("unknown request id in Next", envelope(1, 12, field(1, 0, 424242) + field(3, 0, 10)),
         r"^error 8 .*unknown request"),
        ("cancel of an unknown id", envelope(1, 14, field(1, 0, 5151)), r"^error 8 "),
        ("a reply sent as a request", envelope(1, 17, field(1, 0, 1)), r"^error 5 "),
        ("well-formed health", good, r"^health_reply$"),
    ]
    for name, data, pattern in cases:
        got = raw(args, saddr, data)
        res.check(f"bad envelope: {name}", re.search(pattern, got) is not None, got)
    bad_resume = [
        ("resume id out of the vocabulary", ["--resume-ids", "104,99999"], 2, "vocabulary"),
        ("more resume ids than max_tokens", ["--max-tokens", "2", "--resume-ids", "104,105,106"],
         10, "max_tokens"),
        ("resume_from_seq disagreeing with resume_ids",
         ["--resume-ids", "104,105", "--resume-from-seq", "1"], 2, "resume_from_seq"),
    ]
    for name, flags, code, word in bad_resume:
        r = probe(args, saddr, "generate", *flags, "resume me")
        res.check(f"bad input: {name}", not r["ok"] and r["error_code"] == code and
                  word in r["error"], f"{r['error_code']} {r['error']!r}")
    check_resume(res, args, saddr, "synthetic resume", ["--max-tokens", "20"], "resume me")
    after = load(args, saddr, [{"prompt": "still alive?", "max_tokens": 8}])
    res.check("the worker keeps serving after bad input", after["failed"] == 0 and
              len(after["results"][0]["ids"]) == 8, json.dumps(after)[:300])

    # Deadlines: an already-passed deadline ends the stream with deadline_exceeded.
    d = load(args, saddr, [{"prompt": "late", "max_tokens": 400, "deadline_ms": 30}])
    res.check("deadline passes -> deadline_exceeded",
              d["results"][0]["finish"] == "deadline_exceeded", json.dumps(d["results"][0])[:200])

    # Registration and heartbeats, with the load and a prefix summary.
    time.sleep(0.6)
    lines = coord_lines()
    regs = [l for l in lines if l.startswith("register syn-1 " + saddr)]
    hbs = [l for l in lines if l.startswith("heartbeat syn-1")]
    res.check("worker registers with its address", len(regs) >= 1, "; ".join(lines[-5:]))
    res.check("heartbeats arrive with KV totals and prefix hashes",
              len(hbs) >= 2 and any(re.search(r"kv_total=4096 .* hashes=[1-9]", l) for l in hbs),
              "; ".join(hbs[-2:]))

    # Drain on SIGTERM: the running request finishes, new ones are refused, exit 0.
    long_out = {}
    t = threading.Thread(target=lambda: long_out.update(
        load(args, saddr, [{"prompt": "drain me", "max_tokens": 300}])))
    t.start()
    time.sleep(0.15)
    syn.p.send_signal(15)
    time.sleep(0.1)
    refused = load(args, saddr, [{"prompt": "too late", "max_tokens": 4}])
    t.join(60)
    r0 = long_out.get("results", [{}])[0]
    res.check("drain: the running request completes", r0.get("finish") == "length" and
              len(r0.get("ids", [])) == 300, json.dumps(r0)[:200])
    res.check("drain: new requests are refused (busy)",
              refused["results"][0]["error_code"] == 7, json.dumps(refused["results"][0])[:200])
    rc = syn.stop()
    res.check("drain: exit 0 without sanitizer reports", rc == 0 and not syn.sanitizer(),
              f"rc={rc} {syn.stderr()[-1500:]}")
    res.check("drain: the worker deregisters",
              any(l.startswith("deregister syn-1") for l in coord_lines()), "no deregister line")

    # The Drain RPC drains exactly as SIGTERM does, and answers with the worker's status.
    syn2, saddr2 = start_worker(args, tmp, "synthetic2", "--config", cfg,
                                "--synthetic-step-us", "1000", "--coordinator", coord_addr,
                                "--heartbeat-ms", "200", "--worker-id", "syn-2")
    wrong = probe(args, saddr2, "drain", "syn-9")
    rc, out, _ = ctl(args, saddr2, "health")
    res.check("Drain RPC: another worker's id is ENOENT, and nothing drains",
              wrong["error_code"] == 8 and "syn-9" in wrong["error"] and rc == 0 and
              out.strip() == "ready", f"{json.dumps(wrong)} health={out.strip()}")
    long_out = {}
    t = threading.Thread(target=lambda: long_out.update(
        load(args, saddr2, [{"prompt": "drain me", "max_tokens": 300}])))
    t.start()
    time.sleep(0.15)
    d = probe(args, saddr2, "drain", "syn-2")
    res.check("Drain RPC: answered with the worker's status, draining",
              d["ok"] and d["worker_id"] == "syn-2" and d["address"] == saddr2 and
              d["state"] == "draining" and d["model"] == "synthetic" and d["draining"] == 1 and
              d["running"] == 1, json.dumps(d))
    rc, out, _ = ctl(args, saddr2, "health")
    res.check("Drain RPC: health says draining", rc == 1 and out.strip() == "draining", out)
    refused = load(args, saddr2, [{"prompt": "too late", "max_tokens": 4}])
    res.check("Drain RPC: new requests are refused (busy)",
              refused["results"][0]["error_code"] == 7, json.dumps(refused["results"][0])[:200])
    t.join(60)
    r0 = long_out.get("results", [{}])[0]
    res.check("Drain RPC: the running request completes", r0.get("finish") == "length" and
              len(r0.get("ids", [])) == 300, json.dumps(r0)[:200])
    try:
        rc = syn2.p.wait(timeout=60)  # on its own: no signal
    except subprocess.TimeoutExpired:
        rc = None
    syn2.stop()
    res.check("Drain RPC: the worker exits 0 by itself", rc == 0 and not syn2.sanitizer(),
              f"rc={rc} {syn2.stderr()[-1500:]}")
    coord.stop()
    res.check("Drain RPC: the worker deregisters",
              any(l.startswith("deregister syn-2") for l in coord_lines()), "no deregister line")

    # ---- the default model -------------------------------------------------------------------
    w, addr = start_worker(args, tmp, "model", "--model", args.model, "--ctx", "1024",
                           "--kv-memory-mb", "256")
    n = 8 if args.quick else 32
    reqs = [chat_req(i, 12 if args.quick else 24) for i in range(n // 2)] + \
        [chat_req(len(TOPICS) + i, 12 if args.quick else 24) for i in range(n // 2)]
    alone = load(args, addr, reqs, concurrency=1)
    together = load(args, addr, reqs, concurrency=n)
    same = [x["ids"] == y["ids"] for x, y in zip(alone["results"], together["results"])]
    res.check(f"{n} concurrent streams equal their runs alone (greedy)", all(same[:n // 2]),
              f"{same[:n // 2].count(False)} differ")
    res.check(f"{n} concurrent streams equal their runs alone (seeded sampling)",
              all(same[n // 2:]), f"{same[n // 2:].count(False)} differ")
    res.check(f"all {n} streams produced text", together["failed"] == 0 and
              all(len(x["ids"]) > 0 and x["text"] for x in together["results"]))
    paris = load(args, addr, [{"messages": [{"role": "user", "content":
                                             "What is the capital of France?"}],
                               "max_tokens": 32}])["results"][0]
    res.check("known answer through the server", "Paris" in paris["text"], paris["text"])

    # Failover resume on the model: the continuation is the undisturbed one, greedy and
    # seeded (the draw at position p depends only on (seed, p)).
    gen_n = "12" if args.quick else "24"
    prompt = "Write two sentences about a lighthouse."
    check_resume(res, args, addr, "model resume, greedy", ["--chat", "--max-tokens", gen_n],
                 prompt)
    check_resume(res, args, addr, "model resume, seeded",
                 ["--chat", "--max-tokens", gen_n, "--temperature", "0.8", "--top-p", "0.9",
                  "--seed", "42"], prompt)

    # Cancel mid-stream frees the blocks.
    c = load(args, addr, [{"messages": [{"role": "user", "content":
                                         "Write a long story about a dragon."}],
                           "max_tokens": 500, "cancel_after": 5}])["results"][0]
    res.check("cancel mid-stream ends the stream", c["finish"] == "canceled", c["finish"])
    used = wait_metric(args, addr, "llm_worker_kv_blocks_used", 0)
    res.check("cancel frees the KV blocks (Stats)", used == 0, f"kv_blocks_used={used}")

    # A shared 200-token system prompt is prefilled once.
    shared = [{"messages": [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": q}], "max_tokens": 8}
              for q in ("Where are the maps?", "When do you open?")]
    first = load(args, addr, shared[:1])["results"][0]
    second = load(args, addr, shared[1:])["results"][0]
    pt = second["usage"]["prompt_tokens"]
    cached = second["usage"]["cached_tokens"]
    res.check("shared system prompt: second request reuses its blocks",
              pt > 200 and cached >= 192 and first["usage"]["cached_tokens"] < cached,
              f"prompt={pt} cached={cached} first_cached={first['usage']['cached_tokens']}")
    text = stats(args, addr)
    for name in ("llm_worker_running", "llm_worker_waiting", "llm_worker_kv_blocks_used",
                 "llm_worker_kv_blocks_total", "llm_worker_prefix_hits_total",
                 "llm_worker_step_seconds_bucket", "llm_worker_ttft_seconds_count"):
        res.check(f"Stats has {name}", name in text)
    rc = w.stop()
    res.check("model worker stops cleanly", rc == 0 and not w.sanitizer(),
              f"rc={rc} {w.stderr()[-1500:]}")

    # Preemption under a tiny KV budget: every request completes with the same output.
    # 368,640-byte blocks (float16): 9 MB = 25 blocks for 8 streams of ~6, 6 MB = 17 for
    # 6 of ~5.
    n_few, kv_mb, gen = (6, "6", 40) if args.quick else (8, "9", 64)
    # This worker also runs its threads pinned (pin_threads): the same tokens either way.
    tiny, taddr = start_worker(args, tmp, "tiny", "--model", args.model, "--ctx", "1024",
                               "--kv-memory-mb", kv_mb, "--max-running", "8", "--pin-threads")
    few = [{"messages": [{"role": "user", "content": f"Write a long story about {t}."}],
            "max_tokens": gen} for t in TOPICS[:n_few]]
    few[n_few // 2:] = [dict(r, temperature=0.7, seed=7 + i)
                        for i, r in enumerate(few[n_few // 2:])]
    alone_few = load(args, taddr, few, concurrency=1)
    got = load(args, taddr, few, concurrency=n_few)
    pre = metric(stats(args, taddr), "llm_worker_preemptions_total")
    res.check("tiny KV budget: preemption happened", (pre or 0) > 0, f"preemptions={pre}")
    res.check("tiny KV budget: every request completes with its alone output",
              got["failed"] == 0 and all(x["ids"] == y["ids"] for x, y in
                                         zip(got["results"], alone_few["results"])),
              json.dumps([x["ids"][:6] for x in got["results"]])[:300])
    rc = tiny.stop()
    res.check("tiny worker stops cleanly", rc == 0 and not tiny.sanitizer(),
              f"rc={rc} {tiny.stderr()[-1500:]}")
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
