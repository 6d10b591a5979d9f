#!/usr/bin/env python3
"""test_act_q8.py - 8-bit activations (LLM_ACT=q8) stay close to exact float ones (f32).

The default model reads windows of tests/data/kld.txt (16 windows of about 50..120 tokens)
and writes the last position's logits, once with each mode; the next-token distributions
must agree: mean KL(f32 || q8) < 0.01 (measured 6.2e-3), every window's KL < 0.05 (1.8e-2),
and the greedy token the same in at least 14 of 16 (15). q8 must also be what ran: its
logits differ from f32's. What it does not do: the known answer (Paris) in q8 mode: the
float margin of its first token is 0.08 of 25 and q8 flips it ("L'" over "The"); nor
compare with the numpy reference (test_reference.py, float mode, the default).
"""
import os
import sys
import tempfile

import numpy as np

import itest

WINDOWS = 16


def logits(args, mode, prompt, path):
    os.environ["LLM_ACT"] = mode
    p = itest.run([args.worker, "--model", args.model, "--threads", str(args.threads),
                   "--prompt", prompt, "--max-tokens", "0", "--temperature", "0",
                   "--dump-logits", path], timeout_s=600)
    if p.rc != 0 or p.sanitizer():
        raise RuntimeError(p.describe())
    return np.fromfile(path, dtype="<f4").astype(np.float64)


def log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def main():
    ap = itest.parser(__doc__.split("\n")[0])
    ap.add_argument("--text", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "data", "kld.txt"))
    args = ap.parse_args()
    itest.check_binaries(args)
    res = itest.Results()
    if not os.path.exists(args.model):
        res.skip("q8 vs f32 on the default model", f"{args.model} is absent")
        return res.finish()
    text = open(args.text, encoding="utf-8").read()
    with tempfile.TemporaryDirectory(prefix="llm-q8-") as tmp:
        f = os.path.join(tmp, "logits.bin")
        kls, same, differ = [], 0, 0
        for i in range(WINDOWS):
            # windows of 200..500 characters (about 50..120 tokens), starting anywhere
            start = (i * 331) % (len(text) - 600)
            start = text.rfind(" ", 0, start) + 1
            prompt = text[start:start + 200 + 20 * i]
            a, b = logits(args, "f32", prompt, f), logits(args, "q8", prompt, f)
            pa, pb = log_softmax(a), log_softmax(b)
            kls.append(float(np.sum(np.exp(pa) * (pa - pb))))
            same += int(np.argmax(a) == np.argmax(b))
            differ += int(not np.array_equal(a, b))
        kl = np.array(kls)
        detail = f"mean KL {kl.mean():.2e}, max {kl.max():.2e}, top-1 same {same}/{WINDOWS}"
        res.check("q8 next-token distributions stay close to f32", kl.mean() < 0.01 and
                  kl.max() < 0.05 and same >= WINDOWS - 2, detail)
        res.check("LLM_ACT=q8 selects a different path from f32", differ == WINDOWS,
                  f"{differ}/{WINDOWS} windows differ")
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
