#!/usr/bin/env python3
"""test_reference.py - the C engine's forward pass against the numpy reference (ref_llama.py).

For the default model and for tiny random-weight models of every supported type, runs
llm-worker greedily with --dump-json/--dump-logits on a few prompts (short, a few hundred
tokens, multi-byte UTF-8, ChatML) and checks (1) the final-prompt-position logits agree with
the reference within LOGIT_TOL_REL and (2) every generated id is the reference's argmax given the
same prefix (teacher forcing on the C engine's own prompt_ids + generated_ids, so one
reference pass checks all 32 steps and a divergence is reported at the step it happens).
Tokenization is not checked here: the reference starts from the engine's prompt_ids.
"""
import json
import os
import sys
import tempfile

import numpy as np

import itest

# Tolerance on |logit_C - logit_ref|, relative to the logits' scale max(1, max|logit|).
# Both sides decode the same weights exactly (test_dequant.py), so the difference is the C
# engine's float32 rounding alone (the reference runs in float64, ~1e-13 from exact).
# Measured on the default model: the C engine (AVX2, 2 threads) <= 3.4e-6 x scale (short
# prompts are the worst), numpy's own float32 path <= 2.6e-6 x scale; tiny models <= 4.2e-7.
# 2e-5 is about 6x above both, to allow other summation orders (scalar fallback), and still
# catches small bugs: rms eps 1e-6 instead of 1e-5 moves logits by 1e-3 x scale, one norm
# weight off by a relative 1e-4 by 1.6e-4 x scale; a wrong rope pair or mask moves them O(1).
LOGIT_TOL_REL = 2e-5
# The default engine multiplies packed Q4_0/Q4_1/Q8_0 matrices with 16-bit activations
# (each within 1/65534 of its 32-block's largest magnitude) and keeps the KV cache in
# float16 (keys and values within 2^-11 relative): measured <= 1.7e-3 x scale on the tiny
# random-weight models, whose logits are large, and 3.9e-4 on the default model.
# Everything else is shared with the exact mode (LLM_ACT=f32, --kv-type f32), checked at
# LOGIT_TOL_REL; the packed kernel is checked bit for bit against its definition by
# test_kern_pack, the half attention kernels against float ones by test_kern. 5e-3 still
# catches O(1) errors.
DEFAULT_TOL_REL = 5e-3
# (name, LLM_ACT, extra llm-worker flags, tolerance)
MODES = [("exact", "f32", ["--kv-type", "f32"], LOGIT_TOL_REL),
         ("default", "i16", [], DEFAULT_TOL_REL)]
N_GEN = 32

LONG_TEXT = ("The history of the city begins with a small settlement on the river bank. Over the "
             "centuries, merchants, craftsmen and scholars arrived, built bridges and markets, "
             "and argued about taxes, floods and the price of bread. ")
PROMPTS = [  # (name, text, chat)
    ("short", "Hello", False),
    ("long", LONG_TEXT * 8, False),  # about 300 tokens on the default model
    ("utf8", "日本語のテキスト, 中文, 한국어 🙂🚀👩‍👩‍👧 café naïve Ærøskøbing "
             "Ελληνικά ∑ “quotes”", False),
    ("chat", "What is the capital of France?", True),
]


def run_worker(args, model, text, chat, tmp, ctx_len, threads=None, extra=()):
    if ctx_len and len(text.encode()) > ctx_len - N_GEN - 64:  # tiny models: bytes >= tokens
        text = text.encode()[: ctx_len - N_GEN - 64].decode("ascii", "ignore")
    js, lg = os.path.join(tmp, "out.json"), os.path.join(tmp, "out.logits")
    for f in (js, lg):
        if os.path.exists(f):
            os.remove(f)
    cmd = [args.worker, "--model", model, "--prompt", text, "--temperature", "0", "--max-tokens",
           str(N_GEN), "--threads", str(threads or args.threads), "--dump-json", js, "--dump-logits", lg,
           *extra]
    p = itest.run(cmd + (["--chat"] if chat else []))
    if p.rc != 0 or p.sanitizer():
        return None, None, f"worker failed: {p.describe()}"
    with open(js, encoding="utf-8") as f:
        dump = json.load(f)
    return dump, np.fromfile(lg, dtype="<f4"), None


def check_case(res, name, ref, dump, logits_c, tol_rel):
    prompt, gen = dump["prompt_ids"], dump["generated_ids"]
    if not res.check(f"{name} shape", len(logits_c) == ref.n_vocab and len(gen) <= N_GEN
                     and dump["finish_reason"] in ("stop", "length"),
                     f"{len(logits_c)} logits (want {ref.n_vocab}), {len(gen)} ids, "
                     f"finish_reason={dump['finish_reason']!r}"):
        return
    all_logits = ref.forward(prompt + gen)[len(prompt) - 1:]  # [i] predicts gen[i]
    lr = all_logits[0]
    tol = tol_rel * max(1.0, float(np.abs(lr).max()))
    diff = float(np.abs(logits_c - lr).max())
    res.check(f"{name} logits", diff <= tol,
              f"max|diff|={diff:.3g} = {diff / max(1.0, float(np.abs(lr).max())):.2e} x scale, "
              f"tol={tol:.3g}, max|logit|={np.abs(lr).max():.3g}, {len(prompt)} prompt tokens")
    # Greedy: gen[i] must be the reference argmax; a different choice is accepted only at a
    # near-tie (reference top-two gap within tol), which float32 rounding may flip.
    bad, ties = [], 0
    for i, t in enumerate(gen):
        best = int(np.argmax(all_logits[i]))
        if t != best:
            gap = float(all_logits[i][best] - all_logits[i][t])
            if gap <= tol:
                ties += 1
            else:
                bad.append(f"step {i}: C chose {t}, reference {best} (gap {gap:.3g})")
    # A stop before N_GEN must be a reference stop id, emitted or next.
    if dump["finish_reason"] == "stop" and len(gen) < N_GEN:
        nxt = int(np.argmax(all_logits[len(gen)]))
        if not (gen and gen[-1] in ref.stop_ids) and nxt not in ref.stop_ids:
            bad.append(f"stopped after {len(gen)} ids but reference continues with {nxt}")
    if dump["finish_reason"] == "length" and len(gen) != N_GEN:
        bad.append(f"finish_reason=length after {len(gen)} of {N_GEN} ids")
    res.check(f"{name} greedy", not bad, "; ".join(bad) if bad else
              f"{len(gen)} ids identical" + (f" ({ties} near-ties)" if ties else ""))


def run_model(res, args, mod, label, path, tmp):
    ref = mod.Llama(path)
    for mode, act, extra, tol_rel in MODES:
        os.environ["LLM_ACT"] = act  # the workers this runs inherit it
        run_prompts(res, args, ref, f"{label}[{mode}]", path, tmp, tol_rel, extra)
    del os.environ["LLM_ACT"]


def run_prompts(res, args, ref, label, path, tmp, tol_rel, extra):
    for pname, text, chat in PROMPTS:
        name = f"{label}/{pname}"
        dump, logits_c, err = run_worker(args, path, text, chat, tmp, ref.ctx_len, extra=extra)
        if err:
            res.check(name, False, err)
            continue
        check_case(res, name, ref, dump, logits_c, tol_rel)
        if pname == "short" and label.split("[")[0] in ("tiny-Q4_1", "default"):
            # Threads split a matmul by rows, never a sum, so the thread count must not
            # change a single bit (a resumed or re-run stream depends on that).
            same = []
            for n in (1, 3):
                d, l, err = run_worker(args, path, text, chat, tmp, ref.ctx_len, threads=n,
                                       extra=extra)
                same.append(not err and d["generated_ids"] == dump["generated_ids"]
                            and l.tobytes() == logits_c.tobytes())
            res.check(f"{name} --threads 1/{args.threads}/3 bit-identical", all(same),
                      f"identical for threads 1, 3: {same}")
        if label.startswith("default") and pname == "chat":
            print(f"     chat answer: {dump['text']!r}")


def main():
    ap = itest.parser(__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny models only")
    args = ap.parse_args()
    itest.check_binaries(args)
    mod = itest.load_ref(args.ref)
    res = itest.Results()
    with tempfile.TemporaryDirectory(prefix="llm-ref-") as tmp:
        # Every type with tied embeddings, and one with a separate output.weight
        # (ref_llama.py decodes with gguf.quants, which has no Q8_K: test_dequant.py checks it.)
        types = [t for t in itest.TINY_TYPES if t not in itest.GGUF_PY_UNSUPPORTED]
        for dtype, untied in [(t, False) for t in types] + [("Q4_0", True)]:
            label = f"tiny-{dtype}" + ("-untied" if untied else "")
            try:
                path = itest.make_tiny(args.gguf_tool, tmp, dtype, untied=untied)
            except RuntimeError as e:
                res.check(label, False, str(e))
                continue
            run_model(res, args, mod, label, path, tmp)
        if args.quick:
            pass
        elif not os.path.exists(args.model):
            res.skip("default model", f"{args.model} is absent (scripts/setup.sh fetches it)")
        else:
            run_model(res, args, mod, "default", args.model, tmp)
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
