#!/usr/bin/env python3
"""test_dequant.py - `llm-gguf dequant` against gguf.quants.dequantize, tensor by tensor.

Every tensor of a tiny model of each supported type, and a sample of the default model's
(token_embd included). F32/F16/BF16 must match bit for bit (each is one exact conversion);
the block quants within 1e-6 of the tensor's scale, which allows a d*q+m computed with or
without a fused multiply-add but not a wrong nibble, scale or block order. gguf 0.19
cannot decode Q8_K (ggml's activation format), so Q8_K is checked against dequant_q8_k
below, written here from the block layout (float d, int8 qs[256], int16 bsums[16];
x = d * q), independently of the C decoder.
"""
import os
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize

import itest

EXACT = {T.F32, T.F16, T.BF16}
DEFAULT_SAMPLE = ["token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
                  "blk.0.attn_k.weight", "blk.0.ffn_down.weight", "blk.17.ffn_gate.weight",
                  "blk.29.attn_v.weight", "output_norm.weight"]


def dequant_q8_k(data):
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, 4 + 256 + 2 * 16)
    d = blocks[:, :4].copy().view("<f4")  # [n_blocks, 1]
    q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)  # [n_blocks, 256]
    return (d * q).ravel()


def reference(t):
    if t.tensor_type == T.Q8_K:
        return dequant_q8_k(t.data)
    return dequantize(t.data, t.tensor_type).astype(np.float32).ravel()


def check_tensor(res, args, label, path, t, tmp):
    out = os.path.join(tmp, "t.f32")
    p = itest.run([args.gguf_tool, "dequant", path, t.name, out])
    name = f"{label}/{t.name} ({t.tensor_type.name})"
    if p.rc != 0 or p.sanitizer():
        return res.check(name, False, p.describe())
    want = reference(t)
    got = np.fromfile(out, dtype="<f4")
    os.remove(out)
    if got.shape != want.shape:
        return res.check(name, False, f"{got.size} floats, want {want.size}")
    if t.tensor_type in EXACT:
        bad = int(np.sum(got.view(np.uint32) != want.view(np.uint32)))  # bit-exact, NaN too
        return res.check(name, bad == 0, f"{bad} of {want.size} elements differ")
    scale = max(float(np.abs(want).max()), 1e-30)
    diff = float(np.abs(got.astype(np.float64) - want).max())
    return res.check(name, diff <= 1e-6 * scale,
                     f"max|diff|={diff:.3g}, scale={scale:.3g}, {int(np.sum(got != want))} inexact")


def main():
    ap = itest.parser(__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny models only")
    args = ap.parse_args()
    itest.check_binaries(args)
    res = itest.Results()
    with tempfile.TemporaryDirectory(prefix="llm-deq-") as tmp:
        path = None
        for dtype in itest.TINY_TYPES:
            try:
                path = itest.make_tiny(args.gguf_tool, tmp, dtype)
            except RuntimeError as e:
                res.check(f"tiny-{dtype}", False, str(e))
                continue
            reader = GGUFReader(path)
            types = {t.tensor_type.name for t in reader.tensors if len(t.shape) > 1}
            res.check(f"tiny-{dtype} matrices are {dtype}", types == {dtype}, f"types {types}")
            for t in reader.tensors:
                check_tensor(res, args, f"tiny-{dtype}", path, t, tmp)
        # An unknown tensor name is a clean error, not a crash or an empty file.
        if path:
            p = itest.run([args.gguf_tool, "dequant", path, "no.such.tensor", f"{tmp}/x"])
            res.check("unknown tensor name", p.rc == 1 and not p.sanitizer() and
                      len(p.err_lines()) == 1 and p.err_lines()[0].startswith("llm-gguf: error:")
                      and not os.path.exists(f"{tmp}/x"), p.describe())
        if args.quick:
            pass
        elif not os.path.exists(args.model):
            res.skip("default model", f"{args.model} is absent (scripts/setup.sh fetches it)")
        else:
            tensors = {t.name: t for t in GGUFReader(args.model).tensors}
            for name in DEFAULT_SAMPLE:
                if res.check(f"default has {name}", name in tensors):
                    check_tensor(res, args, "default", args.model, tensors[name], tmp)
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
