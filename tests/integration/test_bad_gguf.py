#!/usr/bin/env python3
"""test_bad_gguf.py - hostile and truncated GGUF files are clean errors, never crashes.

Builds a valid tiny model with `llm-gguf tiny`, parses it with the small byte-level GGUF
codec below (struct.pack, not the gguf package's writer, so every byte is ours), and writes
one corrupted variant per case: bad magic/version, truncations, tensor bounds, alignment,
absurd or overflowing dimensions, bad types, lying string/array lengths and counts,
duplicates, and model-level errors (missing keys and tensors, wrong shapes, zero heads).
Each goes through `llm-worker --model BAD --prompt hi --max-tokens 1` and `llm-gguf info BAD`:
exit 1 (not 0, not a signal), stderr exactly one `llm-worker: error: ...` line that names
the problem (a regex per case), and no sanitizer report. Model-level cases are valid GGUF,
so for those `llm-gguf info` may succeed, but must not crash.
"""
import os
import re
import struct
import sys
import tempfile

import itest

# --- a minimal GGUF codec ----------------------------------------------------------------

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
          10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 8: (32, 34), 2: (32, 18), 3: (32, 20)}  # elems, bytes


def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def gstr(b): return u64(len(b)) + b


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def str(self):
        n = self.take("<Q")
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def value(self, vtype):
        """Returns the raw bytes of one value of vtype (after the type field)."""
        start = self.pos
        if vtype in SCALAR:
            self.take(SCALAR[vtype])
        elif vtype == STRING:
            self.str()
        elif vtype == ARRAY:
            etype, n = self.take("<I"), self.take("<Q")
            for _ in range(n):
                self.value(etype)
        else:
            raise ValueError(f"value type {vtype}")
        return self.buf[start:self.pos]


class Gguf:
    """kvs: [key, vtype, raw value] or a raw entry (bytes) written verbatim;
    tensors: [name, dims, type, offset] or raw bytes."""

    def __init__(self, buf):
        r = Reader(buf)
        assert r.take("<I") == 0x46554747, "not a GGUF file"
        self.version, n_t, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
        self.kvs = []
        for _ in range(n_kv):
            key, vtype = r.str(), r.take("<I")
            self.kvs.append([key, vtype, r.value(vtype)])
        self.tensors = []
        for _ in range(n_t):
            name, nd = r.str(), r.take("<I")
            dims = [r.take("<Q") for _ in range(nd)]
            self.tensors.append([name, dims, r.take("<I"), r.take("<Q")])
        self.align = 32
        for k in self.kvs:
            if k[0] == b"general.alignment":
                self.align = struct.unpack("<I", k[2])[0]
        self.info_end = r.pos
        self.data_start = -(-r.pos // self.align) * self.align
        self.data = buf[self.data_start:]

    def kv(self, key):
        return next(k for k in self.kvs if isinstance(k, list) and k[0] == key)

    def tensor(self, name):
        return next(t for t in self.tensors if isinstance(t, list) and t[0] == name)

    def nbytes(self, t):
        elems, size = BLOCK[t[2]]
        n = 1
        for d in t[1]:
            n *= d
        return n // elems * size

    def data_end(self):
        return max(t[3] + self.nbytes(t) for t in self.tensors if isinstance(t, list))

    def encode(self, magic=b"GGUF", n_kv=None, n_tensors=None):
        out = bytearray(magic + u32(self.version))
        out += u64(len(self.tensors) if n_tensors is None else n_tensors)
        out += u64(len(self.kvs) if n_kv is None else n_kv)
        for k in self.kvs:
            out += k if isinstance(k, bytes) else gstr(k[0]) + u32(k[1]) + k[2]
        for t in self.tensors:
            if isinstance(t, bytes):
                out += t
            else:
                dims = b"".join(u64(d) for d in t[1])
                out += gstr(t[0]) + u32(len(t[1])) + dims + u32(t[2]) + u64(t[3])
        out += bytes(-len(out) % self.align)
        return bytes(out + self.data)


# --- the cases -----------------------------------------------------------------------------

def cases(base_bytes):
    """Yields (name, file bytes, message regex, structural). `structural` cases are invalid
    GGUF, so `llm-gguf info` must fail too; the others are invalid llama models."""
    G = lambda: Gguf(base_bytes)
    TRUNC = (r"empty|truncat|fit|bytes left|end of file|eof|past (the )?end|beyond|"
             r"out of (range|bounds)|too (short|small)|exceeds|size")
    BOUND = r"offset|bound|beyond|past (the )?end|out of (range|bounds)|exceeds|truncat|size"
    HUGE = (r"length|fit|too (long|large|big|many)|huge|exceed|beyond|past|truncat|"
            r"out of (range|bounds)|size|count|limit|memory")
    DIMS = r"dim|shape|size|overflow|too (large|big)|bound|past|beyond|exceed|invalid"

    g = G()
    yield "bad magic", b"GGUX" + base_bytes[4:], r"magic|not a gguf", True
    for v in (1, 4, 0xFFFFFFFF):
        yield f"version {v}", base_bytes[:4] + u32(v) + base_bytes[8:], r"version", True
    cuts = {0, 3, 4, 7, 8, 15, 16, 23, 24, 24 + 8 + len(g.kvs[0][0]) // 2, g.info_end - 1}
    tok = g.kv(b"tokenizer.ggml.tokens")
    cuts.add(base_bytes.find(b"tokenizer.ggml.tokens") + 30)
    cuts.add(base_bytes.find(g.tensors[0][0]) + 3)  # inside the first tensor's name
    for c in sorted(cuts):
        yield f"truncated header at {c}", base_bytes[:c], TRUNC, True
    end = g.data_start + g.data_end()
    for c in (g.data_start, g.data_start + g.data_end() // 2, end - 1):
        yield f"truncated data at {c} of {end}", base_bytes[:c], TRUNC, True

    biggest = max(g.tensors, key=g.nbytes)
    g = G(); g.tensor(biggest[0])[3] = -(-(len(g.data) + 64) // g.align) * g.align
    yield "tensor offset past the end", g.encode(), BOUND, True
    g = G(); t = g.tensor(biggest[0]); t[3] = (len(g.data) - g.nbytes(t) // 2) // g.align * g.align
    yield "tensor size past the end", g.encode(), BOUND, True
    g = G(); min(g.tensors, key=lambda t: t[3])[3] += 1  # the first in the data: stays in bounds
    yield "misaligned tensor offset", g.encode(), r"align", True
    g = G(); g.tensors[0][3] = 2**64 - g.align
    yield "tensor offset near 2^64", g.encode(), BOUND, True

    name = b"blk.0.attn_q.weight"
    for label, dims in [("ne0 = 2^62", [2**62, 1]), ("ne0*ne1 overflows", [2**33, 2**33]),
                        ("ne0*ne1 = 2^64 wraps to 0", [2**32, 2**32]),
                        ("ne0*ne1 = 2^62", [2**31, 2**31]),
                        ("ne0 = 2^64-32 (negative as int64)", [2**64 - 32, 1]),
                        ("4 dims multiplying past 2^64", [2**16 * 32, 2**16, 2**16, 2**16])]:
        g = G(); g.tensor(name)[1] = dims
        yield f"absurd dims {label}", g.encode(), DIMS, True
    g = G(); g.tensor(name)[1] = [g.tensor(name)[1][0] + 1, 1]  # not a whole number of blocks
    yield "ne0 not a multiple of the block size", g.encode(), r"block|multiple|" + DIMS, True
    g = G(); g.tensor(name)[1] = [0, g.tensor(name)[1][1]]
    yield "zero dimension", g.encode(), r"dim|shape|zero|empty|size|attn_q", False
    g = G(); g.tensor(name)[1] = g.tensor(name)[1] + [1, 1, 1]
    yield "n_dims = 5", g.encode(), r"dim", True
    g = G(); g.tensor(name)[2] = 99
    yield "unknown tensor type 99", g.encode(), r"type|99", True
    g = G(); g.tensor(name)[2] = 10
    yield "unsupported tensor type Q2_K", g.encode(), r"Q2_K.*not supported", True

    key_len_cases = [("key length 2^63", u64(2**63) + b"general.name"),
                     ("key length past the end", u64(len(base_bytes)) + b"general.name"),
                     ("string value length 2^62", gstr(b"general.x") + u32(STRING) + u64(2**62) + b"x"),
                     ("string value length 2^64-1", gstr(b"general.x") + u32(STRING) + u64(2**64 - 1)),
                     ("array count 2^62 of int32 (count*4 wraps to 0)",
                      gstr(b"general.x") + u32(ARRAY) + u32(5) + u64(2**62) + u32(7)),
                     ("array count 2^62 of strings",
                      gstr(b"general.x") + u32(ARRAY) + u32(STRING) + u64(2**62) + gstr(b"a")),
                     ("value type 99", gstr(b"general.x") + u32(99) + u32(0)),
                     ("array element type 99",
                      gstr(b"general.x") + u32(ARRAY) + u32(99) + u64(1) + u32(0))]
    for label, raw in key_len_cases:
        g = G(); g.kvs.insert(0, raw)
        yield label, g.encode(), HUGE + r"|type|invalid", True
    g = G(); g.kv(b"tokenizer.ggml.tokens")[2] = u32(STRING) + u64(2**62) + tok[2][12:]
    yield "token array count 2^62", g.encode(), HUGE, True
    g = G()
    yield "kv_count 2^62", g.encode(n_kv=2**62), HUGE, True
    yield "kv_count + 1", g.encode(n_kv=len(g.kvs) + 1), r".", True  # reads tensor infos as kvs
    yield "tensor_count 2^62", g.encode(n_tensors=2**62), HUGE, True
    yield ("tensor_count + 1", g.encode(n_tensors=len(g.tensors) + 1),
           TRUNC + r"|tensor|name|offset|type|dim|invalid", True)

    g = G(); g.tensors.append(list(g.tensors[1]))
    yield "duplicate tensor name", g.encode(), r"duplicate", True
    g = G(); g.kvs.append(list(g.kv(b"general.architecture")))
    yield "duplicate key", g.encode(), r"duplicate", True

    # Model-level: valid GGUF, invalid llama model.
    def drop_kv(key):
        g = G(); g.kvs.remove(g.kv(key)); return g.encode()

    def set_u32(key, v):
        g = G(); k = g.kv(key); k[1], k[2] = 4, u32(v); return g.encode()

    HEADS = r"head|divis|multiple|shape|attn"
    for label, data, regex in [
            ("missing tokenizer.ggml.tokens", drop_kv(b"tokenizer.ggml.tokens"), r"token|vocab"),
            ("missing tokenizer.ggml.merges", drop_kv(b"tokenizer.ggml.merges"), r"merges"),
            ("missing llama.block_count", drop_kv(b"llama.block_count"), r"block_count"),
            ("missing general.architecture", drop_kv(b"general.architecture"), r"architecture"),
            ("llama.block_count 3 (no blk.2 tensors)", set_u32(b"llama.block_count", 3),
             r"blk\.2|missing|not found|tensor"),
            ("llama.block_count 2^31", set_u32(b"llama.block_count", 2**31),
             r"block_count|blk|missing|tensor|too|range"),
            ("head_count 0", set_u32(b"llama.attention.head_count", 0), r"head"),
            ("head_count_kv 0", set_u32(b"llama.attention.head_count_kv", 0), r"head"),
            ("head_count 3 (dim % 3 != 0)", set_u32(b"llama.attention.head_count", 3), HEADS),
            ("head_count_kv 3 (does not divide head_count)",
             set_u32(b"llama.attention.head_count_kv", 3), HEADS),
            ("embedding_length 0", set_u32(b"llama.embedding_length", 0),
             r"embedding_length|dim|shape|embd")]:
        yield label, data, regex, False
    g = G(); k = g.kv(b"general.architecture"); k[2] = gstr(b"mamba")
    yield "unsupported architecture", g.encode(), r"architecture|mamba", False
    g = G(); k = g.kv(b"llama.block_count"); k[1], k[2] = STRING, gstr(b"2")
    yield "llama.block_count is a string", g.encode(), r"block_count", False
    g = G(); t = g.tensor(name); t[1] = [t[1][0], t[1][1] // 2]
    yield "attn_q with wrong dims", g.encode(), r"attn_q|shape|dim", False
    g = G(); g.tensors.remove(g.tensor(b"blk.1.ffn_up.weight"))
    yield "missing tensor blk.1.ffn_up.weight", g.encode(), r"ffn_up|missing|not found", False
    n_vocab = struct.unpack_from("<Q", tok[2], 4)[0]
    g = G(); t = g.tensor(b"token_embd.weight"); t[1] = [t[1][0], t[1][1] - 1]
    yield (f"token_embd has {n_vocab - 1} rows for {n_vocab} tokens", g.encode(),
           r"token_embd|vocab|shape|dim|token", False)


# --- running them ---------------------------------------------------------------------------

def expect_error(res, name, p, prefix, regex, path):
    lines = p.err_lines()
    problems = []
    if p.rc is None:
        problems.append("timed out")
    elif p.rc < 0:
        problems.append(f"killed by signal {-p.rc}")
    elif p.rc != 1:
        problems.append(f"exit code {p.rc}, want 1")
    if p.sanitizer():
        problems.append("sanitizer report")
    if len(lines) != 1 or not lines[0].startswith(prefix):
        problems.append(f"want exactly one '{prefix} ...' line on stderr, got {len(lines)} lines")
    elif not re.search(regex, lines[0][len(prefix):].replace(path, "FILE"), re.I):
        problems.append(f"message does not name the problem (/{regex}/)")
    return res.check(name, not problems, "; ".join(problems) + f": {p.describe()}" if problems
                     else lines[0])


def main():
    ap = itest.parser(__doc__.split("\n")[0])
    ap.add_argument("--keep", help="also write the corrupted files to this folder")
    args = ap.parse_args()
    itest.check_binaries(args)
    res = itest.Results()
    worker = lambda path: itest.run([args.worker, "--model", path, "--prompt", "hi",
                                     "--max-tokens", "1", "--threads", "1"], 60)
    info = lambda path: itest.run([args.gguf_tool, "info", path], 60)
    with tempfile.TemporaryDirectory(prefix="llm-bad-") as tmp:
        base_path = itest.make_tiny(args.gguf_tool, tmp, "Q4_1")
        base = open(base_path, "rb").read()
        # The codec must round-trip the valid file, or the cases test our writer, not the loader.
        again = Gguf(base).encode()
        res.check("codec round-trips the tiny model", again == base,
                  f"{len(again)} vs {len(base)} bytes")
        ok_path = os.path.join(tmp, "roundtrip.gguf")
        open(ok_path, "wb").write(again)
        p = worker(ok_path)
        res.check("re-encoded tiny model loads", p.rc == 0 and not p.sanitizer(), p.describe())
        out_dir = args.keep or tmp
        os.makedirs(out_dir, exist_ok=True)
        for i, (name, data, regex, structural) in enumerate(cases(base)):
            path = os.path.join(out_dir, f"bad{i:02d}-{re.sub(r'[^a-z0-9]+', '_', name.lower())}.gguf")
            open(path, "wb").write(data)
            expect_error(res, f"llm-worker: {name}", worker(path), "llm-worker: error:", regex, path)
            p = info(path)
            if structural or p.rc != 0:
                expect_error(res, f"llm-gguf info: {name}", p, "llm-gguf: error:", regex, path)
            else:
                res.check(f"llm-gguf info: {name} (valid GGUF)", not p.sanitizer(), p.describe())
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
