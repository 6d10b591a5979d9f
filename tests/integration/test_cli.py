#!/usr/bin/env python3
"""test_cli.py - llm-worker's command line: the known answer, flag validation, seeds.

The default model must answer "What is the capital of France?" with Paris (greedy, ChatML).
Invalid flags exit 2 and runtime failures exit 1, each with exactly one `llm-worker: error:`
line that names the culprit. A non-UTF-8 prompt is refused. Sampling with one seed is
reproducible and different seeds give different text. --max-tokens 0 prints nothing.
Flag and seed checks use a tiny Q8_0 model so they stay fast.
The peak RSS of a 256-token generation on the default model stays within the model file
+ its KV cache + 64 MiB (weights are used from the mapping; packing drops the pages it
copied), except under sanitizers, whose shadow memory counts too.
"""
import json
import os
import re
import sys
import tempfile

import itest

FRANCE = "What is the capital of France?"
PREFIX = "llm-worker: error:"


def expect_error(res, name, p, codes, regex):
    lines = p.err_lines()
    ok = (p.rc in codes and not p.sanitizer() and len(lines) == 1 and lines[0].startswith(PREFIX)
          and re.search(regex, lines[0][len(PREFIX):], re.I) is not None and p.out == b"")
    return res.check(name, ok, lines[0] if ok else
                     f"want exit {'/'.join(map(str, codes))}, one '{PREFIX}' line matching "
                     f"/{regex}/ and no stdout: {p.describe()} stdout={p.out[:200]!r}")


def peak_rss(res, args):
    """Runs one 256-token generation with a 512-token context and bounds its peak RSS."""
    import gguf
    r = gguf.GGUFReader(args.model)
    meta = lambda k: int(r.fields[k].parts[-1][0])
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    n_layers, dim = meta(f"{arch}.block_count"), meta(f"{arch}.embedding_length")
    heads, kv_heads = meta(f"{arch}.attention.head_count"), meta(f"{arch}.attention.head_count_kv")
    ctx = 512
    kv_bytes = n_layers * 2 * kv_heads * (dim // heads) * 2 * ctx  # float16 K and V
    bound = os.path.getsize(args.model) + kv_bytes + (64 << 20)
    # ru_maxrss keeps the high-water mark of the image before exec, and a child forked
    # from this interpreter starts with its RSS (the model read above): a small helper
    # forks the worker and reports the worker's own peak.
    helper = ("import os, subprocess, sys\n"
              "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
              "_, status, ru = os.wait4(p.pid, 0)\n"
              "print(os.waitstatus_to_exitcode(status), ru.ru_maxrss)")
    p = itest.run([sys.executable, "-c", helper, args.worker, "--model", args.model, "--threads",
                   str(args.threads), "--prompt", "Once upon a time", "--max-tokens", "256",
                   "--ctx", str(ctx), "--temperature", "0"])
    out = p.out.split()
    ok = p.rc == 0 and len(out) == 2 and out[0] == b"0"
    rss = int(out[1]) * 1024 if ok else 0  # kilobytes on Linux
    res.check("peak RSS of a 256-token generation <= file + KV cache + 64 MiB",
              ok and rss <= bound,
              f"{rss / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB (file "
              f"{os.path.getsize(args.model) / 2**20:.1f}, KV {kv_bytes / 2**20:.1f})" if ok else
              p.describe())


def main():
    ap = itest.parser(__doc__.split("\n")[0])
    ap.add_argument("--sanitized", action="store_true",
                    help="the build runs under sanitizers (RSS is not checked)")
    args = ap.parse_args()
    itest.check_binaries(args)
    res = itest.Results()
    with tempfile.TemporaryDirectory(prefix="llm-cli-") as tmp:
        tiny = itest.make_tiny(args.gguf_tool, tmp, "Q8_0")
        W = lambda *a, model=tiny: itest.run([args.worker, "--model", model, "--threads",
                                              str(args.threads), *a])
        js = os.path.join(tmp, "out.json")

        # The known answer, and stdout == dump-json text.
        if not os.path.exists(args.model):
            res.skip("known answer", f"{args.model} is absent (scripts/setup.sh fetches it)")
        else:
            p = W("--chat", "--prompt", FRANCE, "--temperature", "0", "--max-tokens", "32",
                  "--dump-json", js, model=args.model)
            out = p.out.decode("utf-8", "replace")
            res.check("greedy chat answer contains Paris", p.rc == 0 and "Paris" in out,
                      repr(out) if p.rc == 0 else p.describe())
            if p.rc == 0:
                dump = json.load(open(js, encoding="utf-8"))
                # The CLI may end the stream with one newline for the terminal.
                res.check("stdout equals dump-json text", out in (dump["text"], dump["text"] + "\n"),
                          f"{dump['text']!r} vs {out!r}")
            # A stop string ends the answer before it and is not printed (OpenAI semantics).
            p = W("--chat", "--prompt", FRANCE, "--temperature", "0", "--max-tokens", "32",
                  "--stop", "Paris", "--dump-json", js, model=args.model)
            out = p.out.decode("utf-8", "replace")
            ok = p.rc == 0 and "Paris" not in out
            if ok:
                ok = json.load(open(js, encoding="utf-8"))["finish_reason"] == "stop"
            res.check("--stop Paris stops before Paris with finish_reason stop", ok,
                      repr(out) if p.rc == 0 else p.describe())

        if not os.path.exists(args.model):
            res.skip("peak RSS", f"{args.model} is absent")
        elif args.sanitized:
            # Not a skip: that would mark the whole suite skipped in the sanitizer build.
            print("NOTE peak RSS not bounded: sanitizer shadow memory counts in RSS")
        else:
            peak_rss(res, args)

        # Flag validation: exit 2, an error that names the flag, nothing on stdout.
        bad_flags = [
            (["--temperature", "-1"], "temperature"), (["--temperature", "nan"], "temperature"),
            (["--temperature", "inf"], "temperature"), (["--temperature", "0.5x"], "temperature"),
            (["--top-p", "0"], "top-p|top_p"), (["--top-p", "1.5"], "top-p|top_p"),
            (["--top-k", "-3"], "top-k|top_k"), (["--max-tokens", "-1"], "max-tokens|max_tokens"),
            (["--max-tokens", "abc"], "max-tokens|max_tokens"),
            (["--max-tokens", "99999999999999999999"], "max-tokens|max_tokens"),
            (["--threads", "0"], "threads"), (["--seed", "abc"], "seed"),
            (["--bogus-flag", "1"], "unknown.*--bogus-flag|--bogus-flag.*unknown"),
            (["--bogus-flag"], "--bogus-flag"), (["--max-tokens"], "max-tokens|max_tokens"),
        ]
        for extra, regex in bad_flags:
            expect_error(res, f"flag {' '.join(extra)}", W("--prompt", "hi", *extra), (2,), regex)
        p = itest.run([args.worker, "--prompt", "hi"])
        expect_error(res, "missing --model", p, (2,), "model")
        missing = os.path.join(tmp, "no-such-model.gguf")
        expect_error(res, "nonexistent model file", W("--prompt", "hi", model=missing), (1,),
                     re.escape(missing) + "|no such file|not found")
        expect_error(res, "non-UTF-8 prompt", W("--prompt", b"\xff\xfe"), (1, 2), "utf-?8")
        expect_error(res, "truncated UTF-8 prompt", W("--prompt", b"caf\xc3"), (1, 2), "utf-?8")

        # --max-tokens 0 prints nothing.
        p = W("--prompt", "hi", "--max-tokens", "0", "--dump-json", js)
        ok = p.rc == 0 and p.out == b"" and not p.sanitizer()
        if ok:
            ok = json.load(open(js, encoding="utf-8"))["generated_ids"] == []
        res.check("--max-tokens 0 prints nothing", ok, p.describe() + f" stdout={p.out!r}")

        # --kv-type: f16 (the default) or f32; anything else is a usage error. An unknown
        # LLM_ACT is a warning naming the known values, and the default path runs.
        expect_error(res, "--kv-type f8", W("--prompt", "hi", "--kv-type", "f8"), (2,), "kv-type")
        p = itest.run([args.worker, "--model", tiny, "--listen", "tcp://127.0.0.1:1",
                       "--kv-type", "f8"])
        res.check("serving with kv_type f8: exit 2 naming kv_type",
                  p.rc == 2 and "kv_type" in p.err and not p.sanitizer(), p.describe())
        a = W("--prompt", "hi", "--max-tokens", "4", "--temperature", "0", "--kv-type", "f32")
        os.environ["LLM_ACT"] = "q8"
        b = itest.run([args.worker, "--model", tiny, "--threads", str(args.threads), "--prompt",
                       "hi", "--max-tokens", "4", "--temperature", "0"], log_level="warn")
        del os.environ["LLM_ACT"]
        res.check("--kv-type f32 runs", a.rc == 0 and not a.sanitizer(), a.describe())
        res.check("an unknown LLM_ACT warns and runs", b.rc == 0 and not b.sanitizer() and
                  "event=unknown_llm_act" in b.err and 'known="f32|i16"' in b.err, b.describe())

        # Seeds: reproducible, and different seeds differ (six seeds of 24 tokens at
        # temperature 1 over a random model's near-uniform distribution: a collision of
        # all five with the first is astronomically unlikely).
        def sample(seed, model=tiny, prompt="Once upon a time"):
            p = W("--prompt", prompt, "--temperature", "1", "--top-p", "0.95", "--max-tokens",
                  "24", "--seed", str(seed), "--dump-json", js, model=model)
            if p.rc != 0 or p.sanitizer():
                return None, p.describe(), None
            dump = json.load(open(js, encoding="utf-8"))
            return dump["generated_ids"], p.out, dump["text"]
        for label, model in [("tiny", tiny), ("default", args.model)]:
            if not os.path.exists(model):
                res.skip(f"{label} seeds", f"{model} is absent")
                continue
            a, b = sample(42, model), sample(42, model)
            res.check(f"{label}: same seed twice is identical", a[0] is not None and a == b,
                      f"{a[1]!r}" if a == b else f"{a} vs {b}")
            others = [sample(s, model)[0] for s in (1, 2, 3, 4, 5)]
            n_diff = sum(o != a[0] for o in others)
            # A random model emits byte tokens that do not form UTF-8; the stream must still
            # be valid UTF-8 (what the HTTP/SSE front end will send) and match the dump.
            if a[0] is not None:
                out = a[1].decode("utf-8", "replace")
                res.check(f"{label}: sampled stdout is valid UTF-8 and equals dump-json text",
                          out.encode() == a[1] and out in (a[2], a[2] + "\n"),
                          f"stdout {a[1]!r}, text {a[2]!r}")
            res.check(f"{label}: different seeds differ", n_diff > 0,
                      f"{n_diff} of 5 other seeds differ from seed 42's {a[0]}")

        # The benchmark tools run and print their tables (their figures are not checked:
        # speed belongs to benchmarks), pinned threads included.
        wdir = os.path.dirname(args.worker)
        p = itest.run([os.path.join(wdir, "llm-kern-bench"), "--attn", "--reps", "2"])
        res.check("llm-kern-bench --attn prints the attention table",
                  p.rc == 0 and not p.sanitizer() and b"| scores, 3 queries |" in p.out,
                  p.describe())
        p = itest.run([os.path.join(wdir, "llm-kern-bench"), "--type", "Q8_0", "--rows", "64",
                       "--cols", "64", "--tokens", "1,5", "--reps", "2"])
        res.check("llm-kern-bench times a packed Q8_0 matmul",
                  p.rc == 0 and not p.sanitizer() and b"packed" in p.out and b"| 5 |" in p.out,
                  p.describe())
        p = itest.run([os.path.join(wdir, "llm-engine-bench"), "--model", tiny, "--threads",
                       "1,2", "--prompt-tokens", "20", "--decode-tokens", "3", "--reps", "1",
                       "--batch", "3", "--pin", "1"])
        res.check("llm-engine-bench runs pinned, batched included",
                  p.rc == 0 and not p.sanitizer() and p.out.count(b"\n| 2 |") == 1 and
                  b"| 3 |" in p.out, p.describe())
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
