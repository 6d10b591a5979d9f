#!/usr/bin/env python3
"""test_quantize.py - `llm-quantize` outputs, refusals and failures; `llm-kld` figures.

Tiny F32 models (tied and untied) are quantized to every target. Each output must open
(`llm-gguf info`), hold every matrix in the target type (where a row is not a multiple
of the target's block: Q5_0 for Q4_K, Q5_1 for Q5_K, Q8_0 for the others) and every vector in F32, carry every input key with the
same value (general.file_type and general.quantization_version set for the target),
decode (`llm-gguf dequant`) to within the type's rounding bound of the original weights,
and run in `llm-worker`. Refusals and failures (unknown type, OUT is IN by path, by
symlink or by hard link, missing arguments, a missing or corrupt input, a full disk) must
give one error line, the documented exit code, and leave neither the output nor a
temporary file behind (an existing output is left as it was). The disk-full case is real
and unprivileged: RLIMIT_FSIZE caps the file size, and with SIGXFSZ ignored the write
fails with EFBIG exactly as a full disk fails with ENOSPC.
Then the default model is quantized to Q8_0 and `llm-kld` (first 256 tokens of
tests/data/kld.txt) must report finite figures: small KL, high top-1 agreement, close
perplexities.
"""
import math
import os
import resource
import signal
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

import itest

TARGETS = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16", "F32"]
FTYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K": 14,
         "Q5_K": 16, "Q6_K": 18, "BF16": 32}
BLOCK = {"Q8_0": 32, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32, "Q4_K": 256, "Q5_K": 256,
         "Q6_K": 256, "F16": 1, "BF16": 1, "F32": 1}
# A matrix whose rows do not fit the target's blocks (llama.cpp's choices for K-quants).
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1"}
RESET_KEYS = {"general.file_type", "general.quantization_version"}
HERE = os.path.dirname(os.path.abspath(__file__))


def field_value(f):
    """A comparable Python value of a GGUFReader field (scalars, strings, arrays)."""
    parts = [bytes(f.parts[i]) for i in f.data]
    return (tuple(f.types), tuple(parts))


def listing(d):
    return sorted(os.listdir(d))


def block_bound(dtype, orig):
    """Largest error the type's rounding allows for each element of orig (blocks of 32)."""
    if dtype == "F32":
        return np.zeros_like(orig)
    if dtype == "F16":
        return np.abs(orig) * 2.0 ** -11 + 6e-8
    if dtype == "BF16":
        return np.abs(orig) * 2.0 ** -8 + 1e-38
    rows = orig.reshape(-1, 32)
    amax = np.abs(rows).max(axis=1, keepdims=True)
    rng = rows.max(axis=1, keepdims=True) - rows.min(axis=1, keepdims=True)
    if dtype == "Q8_0":
        b = amax / 127.0 * 0.5 * 1.01 + amax * 2.0 ** -10  # half a step, fp16 scale
    elif dtype in ("Q4_0", "Q5_0"):
        # d = max / -2^(bits-1): the far side of the max clamps by up to one step
        b = amax / (8.0 if dtype == "Q4_0" else 16.0) * 1.01
    elif dtype in ("Q4_1", "Q5_1"):
        b = rng / (15.0 if dtype == "Q4_1" else 31.0) * 0.5 * 1.01 + amax * 2.0 ** -9
    elif dtype in ("Q4_K", "Q5_K"):  # 6-bit sub-block scales and mins, fp16 super-block ones
        b = rng / (15.0 if dtype == "Q4_K" else 31.0) * 1.5 + amax * 2.0 ** -6
    else:  # Q6_K: signed 6-bit values, 8-bit scales of 16-element sub-blocks
        b = amax / 32.0 * 1.5 + amax * 2.0 ** -7
    return np.broadcast_to(b, rows.shape).reshape(orig.shape)


def dequant(args, path, name, tmp):
    out = os.path.join(tmp, "deq.f32")
    p = itest.run([args.gguf_tool, "dequant", path, name, out])
    if p.rc != 0:
        raise RuntimeError(p.describe())
    v = np.fromfile(out, dtype="<f4")
    os.remove(out)
    return v


def quantize(args, src, dst, dtype, **kw):
    return itest.run([args.quantize, src, dst, dtype], **kw)


def check_output(res, args, label, src, out, dtype, tmp):
    """The output of one conversion: types, metadata, values, and that it runs."""
    p = itest.run([args.gguf_tool, "info", out])
    if not res.check(f"{label}: llm-gguf info opens it", p.rc == 0 and not p.sanitizer(),
                     p.describe()):
        return
    rin, rout = GGUFReader(src), GGUFReader(out)
    tin = {t.name: t for t in rin.tensors}
    tout = {t.name: t for t in rout.tensors}
    res.check(f"{label}: same tensors and shapes", list(tin) == list(tout) and all(
        list(tin[n].shape) == list(tout[n].shape) for n in tin), f"{list(tout)}")
    bad = []
    for t in rout.tensors:
        ne0 = int(t.shape[0])
        if len(t.shape) < 2 or t.n_elements < 1024:
            want = "F32"
        elif ne0 % BLOCK[dtype] == 0:
            want = dtype
        else:
            want = FALLBACK.get(dtype, "Q8_0") if ne0 % 32 == 0 else "F32"
        if t.tensor_type.name != want:
            bad.append(f"{t.name}={t.tensor_type.name} want {want}")
    res.check(f"{label}: matrices are {dtype} ({FALLBACK.get(dtype, 'Q8_0')} fallback), vectors F32", not bad,
              "; ".join(bad[:5]))
    fin = {k: f for k, f in rin.fields.items() if not k.startswith("GGUF.")}
    fout = {k: f for k, f in rout.fields.items() if not k.startswith("GGUF.")}
    missing = [k for k in fin if k not in fout]
    changed = [k for k in fin if k in fout and k not in RESET_KEYS and
               field_value(fin[k]) != field_value(fout[k])]
    res.check(f"{label}: every metadata key copied unchanged", not missing and not changed and
              list(k for k in fout if k not in RESET_KEYS) ==
              list(k for k in fin if k not in RESET_KEYS),
              f"missing {missing}, changed {changed}")
    ft = fout.get("general.file_type")
    qv = fout.get("general.quantization_version")
    res.check(f"{label}: general.file_type = {FTYPE[dtype]}, quantization_version = 2",
              ft is not None and int(ft.contents()) == FTYPE[dtype] and qv is not None and
              int(qv.contents()) == 2,
              f"{ft and ft.contents()} {qv and qv.contents()}")
    worst = ""
    ok = True
    for name, t in tout.items():
        orig = dequant(args, src, name, tmp).astype(np.float64)
        got = dequant(args, out, name, tmp).astype(np.float64)
        err = np.abs(got - orig)
        bound = block_bound(t.tensor_type.name, orig)
        if got.shape != orig.shape or np.any(err > bound):
            ok = False
            i = int(np.argmax(err - bound)) if got.shape == orig.shape else 0
            worst = (f"{name} ({t.tensor_type.name}): |err| {err.flat[i]:.3g} > bound "
                     f"{bound.flat[i]:.3g} at {i}" if got.shape == orig.shape else "shape")
            break
    res.check(f"{label}: dequantized weights within the type's rounding bound", ok, worst)
    p = itest.run([args.worker, "--model", out, "--prompt", "Hello there", "--max-tokens", "4",
                   "--temperature", "0", "--threads", str(args.threads)])
    res.check(f"{label}: llm-worker runs on it", p.rc == 0 and not p.sanitizer(), p.describe())


def check_refusal(res, name, p, code, tmp, before, must_say=None):
    lines = p.err_lines()
    ok = (p.rc == code and not p.sanitizer() and len(lines) == 1 and
          lines[0].startswith("llm-quantize: error:") and listing(tmp) == before and
          (must_say is None or must_say in lines[0]))
    res.check(name, ok, f"{p.describe()} files {sorted(set(listing(tmp)) - set(before))}")


def limit_file_size(n_bytes):
    def fn():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return fn


def kld(args, base, model, text, *extra):
    p = itest.run([args.kld, "--base", base, "--model", model, "--text", text, "--threads",
                   str(args.threads), *extra], timeout_s=900)
    figs = {}
    if p.rc == 0:
        for line in p.out.decode().splitlines():
            k, v = line.split()
            figs[k] = float(v)
    return p, figs


def main():
    ap = itest.parser(__doc__.split("\n")[0])
    ap.add_argument("--quantize", required=True, help="path to llm-quantize")
    ap.add_argument("--kld", required=True, help="path to llm-kld")
    ap.add_argument("--text", default=os.path.join(HERE, "..", "data", "kld.txt"))
    args = ap.parse_args()
    itest.check_binaries(args)
    for b in (args.quantize, args.kld):
        if not os.access(b, os.X_OK):
            print(f"FAIL: binary {b} is missing or not executable\n0 passed, 1 failed")
            return 1
    res = itest.Results()
    with tempfile.TemporaryDirectory(prefix="llm-quant-") as tmp:
        srcs = {"tied": itest.make_tiny(args.gguf_tool, tmp, "F32", seed=3),
                "untied": itest.make_tiny(args.gguf_tool, tmp, "F32", seed=4, untied=True)}
        work = os.path.join(tmp, "work")
        os.mkdir(work)
        for dtype in TARGETS:
            for kind, src in srcs.items():
                label = f"{kind}-{dtype}"
                out = os.path.join(work, f"{label}.gguf")
                p = quantize(args, src, out, dtype)
                if dtype == "Q4_K" and p.rc == 2 and "cannot be quantized to yet" in p.err:
                    res.check(f"{label}: refused cleanly (no Q4_K encoder yet)",
                              len(p.err_lines()) == 1 and not os.path.exists(out), p.describe())
                    continue
                if res.check(f"{label}: quantized", p.rc == 0 and not p.sanitizer() and
                             os.path.exists(out) and listing(work) == sorted(
                                 f for f in listing(work) if ".tmp" not in f), p.describe()):
                    check_output(res, args, label, src, out, dtype, tmp)
        # A quantized model re-quantized: sources of any type are decoded.
        q8 = os.path.join(work, "tied-Q8_0.gguf")
        p = quantize(args, q8, os.path.join(work, "q8-to-q4.gguf"), "Q4_0")
        if res.check("a Q8_0 model re-quantized to Q4_0", p.rc == 0, p.describe()):
            check_output(res, args, "q8-to-q4", q8, os.path.join(work, "q8-to-q4.gguf"), "Q4_0",
                         tmp)
        # The debug level prints one line per tensor, info a summary.
        p = quantize(args, srcs["tied"], os.path.join(work, "dbg.gguf"), "Q4_0",
                     log_level="debug")
        n_t = len(GGUFReader(srcs["tied"]).tensors)
        res.check("debug log: one line per tensor and a summary",
                  p.rc == 0 and p.err.count("event=quant_tensor ") == n_t and
                  "event=quantized " in p.err and "in_bytes=" in p.err and "seconds=" in p.err,
                  p.err[-500:])

        # Refusals and failures: one line, the right code, nothing left behind.
        ref = os.path.join(tmp, "ref")
        os.mkdir(ref)
        src = os.path.join(ref, "in.gguf")
        with open(srcs["tied"], "rb") as f:
            data = f.read()
        with open(src, "wb") as f:
            f.write(data)
        os.symlink(src, os.path.join(ref, "link.gguf"))
        os.link(src, os.path.join(ref, "hard.gguf"))
        corrupt = os.path.join(ref, "corrupt.gguf")
        with open(corrupt, "wb") as f:
            f.write(data[:len(data) // 3])
        before = listing(ref)
        out = os.path.join(ref, "out.gguf")
        check_refusal(res, "unknown type: exit 2 naming the valid types",
                      quantize(args, src, out, "Q3_X"), 2, ref, before, "Q8_0, Q4_0, Q4_1")
        check_refusal(res, "lower-case type is not guessed", quantize(args, src, out, "q4_0"),
                      2, ref, before)
        check_refusal(res, "OUT equal to IN: exit 2", quantize(args, src, src, "Q4_0"), 2, ref,
                      before)
        check_refusal(res, "OUT is IN by another spelling",
                      quantize(args, src, os.path.join(ref, ".", "in.gguf"), "Q4_0"), 2, ref,
                      before)
        check_refusal(res, "OUT is a symlink to IN: exit 2",
                      quantize(args, src, os.path.join(ref, "link.gguf"), "Q4_0"), 2, ref,
                      before)
        check_refusal(res, "OUT is a hard link to IN: exit 2",
                      quantize(args, src, os.path.join(ref, "hard.gguf"), "Q4_0"), 2, ref,
                      before)
        with open(src, "rb") as f:
            res.check("the input is untouched by the refusals", f.read() == data)
        for n in range(3):
            check_refusal(res, f"{n} arguments: exit 2",
                          itest.run([args.quantize] + [src, out, "Q4_0"][:n]), 2, ref, before)
        check_refusal(res, "unknown option: exit 2", itest.run([args.quantize, "--fast", src,
                                                                out, "Q4_0"]), 2, ref, before)
        check_refusal(res, "nonexistent input: exit 1",
                      quantize(args, os.path.join(ref, "nope.gguf"), out, "Q4_0"), 1, ref, before)
        check_refusal(res, "corrupt input: exit 1", quantize(args, corrupt, out, "Q4_0"), 1, ref,
                      before)
        check_refusal(res, "output directory missing: exit 1",
                      quantize(args, src, os.path.join(ref, "no", "out.gguf"), "Q4_0"), 1, ref,
                      before)
        # Disk full, for real: a 64 KiB file size limit stops the F32 copy (~370 KiB)
        # partway through the tensor data. An existing output must survive as it was.
        with open(out, "wb") as f:
            f.write(b"previous output")
        before_full = listing(ref)
        p = quantize(args, src, out, "F32", preexec_fn=limit_file_size(64 << 10))
        check_refusal(res, "file size limit (disk full): exit 1, nothing left behind", p, 1, ref,
                      before_full, "File too large")
        with open(out, "rb") as f:
            res.check("disk full: the existing output is untouched", f.read() == b"previous output")
        p = quantize(args, src, out, "F32", preexec_fn=limit_file_size(1 << 30))
        res.check("the same conversion succeeds with room to write", p.rc == 0, p.describe())

        # llm-kld on tiny models: a model against itself is KL 0, agreement 1.
        tiny_q4 = os.path.join(work, "tied-Q4_0.gguf")
        p, f = kld(args, srcs["tied"], srcs["tied"], args.text, "--max-tokens", "300")
        res.check("kld: a model against itself: KL 0, top-1 agreement 1, same perplexity",
                  p.rc == 0 and f.get("kl_mean") == 0 and f.get("kl_max") == 0 and
                  f.get("top1_agree") == 1 and f.get("ppl_base") == f.get("ppl_model") and
                  f.get("tokens") == 300, p.describe() + repr(f))
        p, f = kld(args, srcs["tied"], tiny_q4, args.text, "--max-tokens", "300")
        res.check("kld: tiny F32 vs Q4_0: KL > 0 and finite",
                  p.rc == 0 and 0 < f.get("kl_mean", 0) < math.inf and
                  f["kl_p99"] >= f["kl_mean"] and f["kl_max"] >= f["kl_p99"],
                  p.describe() + repr(f))
        p = itest.run([args.kld, "--base", srcs["tied"], "--model", tiny_q4])
        res.check("kld: missing --text is exit 2, one line",
                  p.rc == 2 and len(p.err_lines()) == 1, p.describe())
        p = itest.run([args.kld, "--base", srcs["tied"], "--model", tiny_q4, "--text",
                       os.path.join(ref, "nope.txt")])
        res.check("kld: missing text file is exit 1, one line",
                  p.rc == 1 and len(p.err_lines()) == 1, p.describe())

        if not os.path.exists(args.model):
            res.skip("default model", f"{args.model} is absent (scripts/setup.sh fetches it)")
        else:
            q8 = os.path.join(work, "default-Q8_0.gguf")
            p = quantize(args, args.model, q8, "Q8_0", log_level="info")
            if res.check("default model quantized to Q8_0", p.rc == 0 and not p.sanitizer(),
                         p.describe()):
                types = {t.tensor_type.name for t in GGUFReader(q8).tensors
                         if len(t.shape) > 1}
                res.check("default Q8_0: every matrix is Q8_0", types == {"Q8_0"}, f"{types}")
                p = itest.run([args.kld, "--base", srcs["tied"], "--model", q8, "--text",
                               args.text])
                res.check("kld: models with different vocabularies are refused (exit 1)",
                          p.rc == 1 and len(p.err_lines()) == 1, p.describe())
                p, f = kld(args, args.model, q8, args.text, "--max-tokens", "256")
                sane = (p.rc == 0 and not p.sanitizer() and f.get("tokens") == 256 and
                        all(math.isfinite(v) for v in f.values()) and
                        0 <= f["kl_mean"] < 0.02 and f["kl_p99"] < 0.2 and
                        f["top1_agree"] >= 0.9 and 1 < f["ppl_base"] < 200 and
                        abs(math.log(f["ppl_model"] / f["ppl_base"])) < 0.05)
                res.check("kld: default Q4_1 vs its Q8_0 requantization is close", sane,
                          p.describe() + repr(f))
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
