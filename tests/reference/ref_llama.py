#!/usr/bin/env python3
"""ref_llama.py - an independent numpy reference of the llama forward pass over a GGUF file.

It shares no code with the C engine: weights come from the `gguf` package (GGUFReader +
gguf.quants.dequantize), and every step is written out plainly so it can be read against
llama.cpp / llama2.c. It is a test oracle, not an engine: it keeps every weight dequantized
in memory and is slow. What it does not do: tokenize, sample, or handle rope scaling.

Precision: float64 by default. Both this and the C engine use the same dequantized weights,
so a float64 reference is close to the exact answer and the measured difference is the C
engine's own float32 rounding alone (not the sum of two float32 errors). --dtype float32
is there to measure how large float32 rounding is (see tests/integration/test_reference.py).

CLI: ref_llama.py --model M --tokens 1,2,3 [--n-greedy 32] [--out-json F] [--out-logits F]
"""
import argparse
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


class Llama:
    def __init__(self, path, dtype=np.float64):
        r = GGUFReader(path)
        arch = field(r, "general.architecture")
        hp = lambda key, default=None: field(r, f"{arch}.{key}", default)
        self.dtype = dtype
        self.n_layer = int(hp("block_count"))
        self.dim = int(hp("embedding_length"))
        self.n_head = int(hp("attention.head_count"))
        self.n_kv = int(hp("attention.head_count_kv", self.n_head))
        self.head_dim = int(hp("attention.key_length", self.dim // self.n_head))
        self.n_rot = int(hp("rope.dimension_count", self.head_dim))
        self.theta = float(hp("rope.freq_base", 10000.0))
        self.eps = float(hp("attention.layer_norm_rms_epsilon", 1e-5))
        self.ctx_len = int(hp("context_length", 0))
        # End-of-generation ids, as llama.cpp collects them: the eos/eot/eom ids plus the
        # well-known end-of-turn tokens of chat vocabularies.
        tokens = field(r, "tokenizer.ggml.tokens", [])
        self.stop_ids = {int(field(r, f"tokenizer.ggml.{k}_token_id")) for k in ("eos", "eot", "eom")
                         if field(r, f"tokenizer.ggml.{k}_token_id") is not None}
        self.stop_ids |= {i for i, t in enumerate(tokens) if t in ("<|im_end|>", "<|eot_id|>", "<|end|>",
                                                                  "<end_of_turn>", "<|endoftext|>")}
        scaling = hp("rope.scaling.type", "none")
        if scaling not in ("none", "linear") or any(t.name == "rope_freqs.weight" for t in r.tensors):
            raise NotImplementedError(f"rope scaling {scaling!r} is not implemented in the reference")
        self.pos_scale = 1.0 / float(hp("rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0
        # GGUF shape is [ne0, ne1] with ne0 contiguous; numpy wants (ne1, ne0): rows of W.
        shape = lambda t: tuple(int(n) for n in reversed(t.shape))
        self.w = {t.name: dequantize(t.data, t.tensor_type).reshape(shape(t)).astype(dtype)
                  for t in r.tensors}
        self.w.setdefault("output.weight", self.w["token_embd.weight"])  # tied embeddings
        self.n_vocab = self.w["output.weight"].shape[0]

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        # x: (n_tok, n_heads, head_dim). GGUF "normal" mode: rotate adjacent pairs
        # (x[2i], x[2i+1]) by pos * theta^(-2i/n_rot); dims past n_rot pass through.
        i = np.arange(self.n_rot // 2)
        ang = pos[:, None] * self.pos_scale * self.theta ** (-2.0 * i / self.n_rot)  # (n_tok, n_rot/2)
        cos, sin = np.cos(ang)[:, None, :].astype(self.dtype), np.sin(ang)[:, None, :].astype(self.dtype)
        out = x.copy()
        a, b = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
        out[..., 0:self.n_rot:2] = a * cos - b * sin
        out[..., 1:self.n_rot:2] = a * sin + b * cos
        return out

    def new_cache(self):
        hd = self.head_dim
        return [[np.zeros((0, self.n_kv, hd), self.dtype)] * 2 for _ in range(self.n_layer)]

    def forward(self, tokens, cache=None):
        """Logits (n_tok, n_vocab) for every position of tokens, appended after whatever
        `cache` (from new_cache()) already holds; the cache is extended in place."""
        cache = self.new_cache() if cache is None else cache
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(tokens) == 0:
            return np.zeros((0, self.n_vocab), self.dtype)
        n, hd, group = len(tokens), self.head_dim, self.n_head // self.n_kv
        pos = cache[0][0].shape[0] + np.arange(n)
        x = self.w["token_embd.weight"][tokens]                           # (n, dim)
        for l in range(self.n_layer):
            W = lambda name: self.w[f"blk.{l}.{name}.weight"]
            h = self.rmsnorm(x, W("attn_norm"))
            q = self.rope((h @ W("attn_q").T).reshape(n, self.n_head, hd), pos)
            k = self.rope((h @ W("attn_k").T).reshape(n, self.n_kv, hd), pos)
            v = (h @ W("attn_v").T).reshape(n, self.n_kv, hd)
            cache[l][0] = K = np.concatenate([cache[l][0], k])            # (n_past + n, n_kv, hd)
            cache[l][1] = V = np.concatenate([cache[l][1], v])
            # Grouped-query attention: query head j reads KV head j // group (llama.cpp order).
            K, V = np.repeat(K, group, axis=1), np.repeat(V, group, axis=1)
            s = np.einsum("qhd,khd->hqk", q, K) / np.sqrt(hd).astype(self.dtype)
            s = np.where(np.arange(K.shape[0])[None, None, :] <= pos[None, :, None], s, -np.inf)
            p = np.exp(s - s.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            att = np.einsum("hqk,khd->qhd", p, V).reshape(n, self.n_head * hd)
            x = x + att @ W("attn_output").T
            h = self.rmsnorm(x, W("ffn_norm"))
            g = h @ W("ffn_gate").T
            x = x + ((g / (1 + np.exp(-g))) * (h @ W("ffn_up").T)) @ W("ffn_down").T  # SwiGLU
        return self.rmsnorm(x, self.w["output_norm.weight"]) @ self.w["output.weight"].T

    def greedy(self, prompt, n_tokens, stop_ids=None):
        """Greedy continuation of prompt: (generated ids, final-prompt-position logits).
        Stops after emitting an id in stop_ids (default: the GGUF eos/eot ids)."""
        stop_ids = self.stop_ids if stop_ids is None else stop_ids
        cache = self.new_cache()
        logits = self.forward(prompt, cache)[-1]
        first, out = logits, []
        while len(out) < n_tokens:
            out.append(int(np.argmax(logits)))
            if out[-1] in stop_ids:
                break
            logits = self.forward([out[-1]], cache)[-1]
        return out, first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--n-greedy", type=int, default=0)
    ap.add_argument("--no-stop", action="store_true", help="do not stop at eos/eot")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--out-json", help="write {prompt_ids, greedy_ids, logits} here")
    ap.add_argument("--out-logits", help="write final-position logits as raw float32 LE here")
    a = ap.parse_args()
    model = Llama(a.model, np.dtype(a.dtype).type)
    prompt = [int(t) for t in a.tokens.split(",") if t.strip()]
    if not prompt:
        ap.error("--tokens needs at least one id")
    ids, logits = model.greedy(prompt, a.n_greedy, set() if a.no_stop else None)
    if a.out_json:
        with open(a.out_json, "w") as f:
            json.dump({"prompt_ids": prompt, "greedy_ids": ids, "logits": logits.tolist()}, f)
    if a.out_logits:
        logits.astype("<f4").tofile(a.out_logits)
    print(json.dumps({"greedy_ids": ids, "argmax": int(np.argmax(logits))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
