"""test_tokenizer_oracle.py - our BPE tokenizer against HuggingFace `tokenizers`.

The oracle is built independently of our code, from the GGUF's vocabulary and merges
only: a `tokenizers` BPE model (no unknown token, no byte fallback) behind SmolLM2's
pre-tokenizer, Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
use_regex=True)], with a ByteLevel decoder. Both tokenize a corpus of hand-picked strings
(English, code, numbers, CJK, emoji, accents, RTL, white-space runs, CR LF, tabs) and a
few hundred random strings built from a fixed-seed mixture of such pieces and of random
assigned code points. Checks:
  - per string, the ids are equal (parse_special off; the oracle then has no added
    tokens), and our decode gives back the input less the bytes the vocabulary has no
    token for (SmolLM2 lacks 21 byte tokens; both tokenizers drop those bytes);
  - random byte strings (invalid UTF-8 included), which the oracle cannot take, round-trip
    through our encode and decode the same way;
  - a few chat-formatted strings give the oracle's ids with parse_special on (the oracle
    then has the control tokens added). Our ids come from tests/tools/tok_dump (hex lines in,
"ids<TAB>decoded-hex" lines out).

Usage: .venv/bin/python tests/integration/test_tokenizer_oracle.py --tok-dump PATH --model GGUF
Exit: 0 pass, 1 fail (with the diff), 77 skip (model absent). Ends with "N passed, M failed".
"""
import argparse
import os
import random
import subprocess
import sys

SKIP = 77
TOKEN_TYPE_CONTROL = 3

CORPUS = [
    "",
    "a",
    " ",
    "Hello world!",
    "Hello, world! How are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure it's fine, they've said we'll go; you'd agree, I'd think. 'Sup",
    "DON'T SHOUT, IT'S RUDE. He's 'quoted' here",
    "  leading spaces and trailing spaces   ",
    "multiple     spaces\tand\ttabs\t\t\tend",
    "line one\nline two\r\nline three\n\n\nfour\r\n\r\n",
    "\n",
    "\r\n",
    "   \n   \n",
    "\t \t \n",
    "1234567890 3.14159 -42 +7 1e-9 0x1F 2024-11-23 12:30:45",
    "x = 10000000000000; y = 1,234,567.89",
    "def foo(bar, *args, **kwargs):\n    return {'a': [1, 2, 3]}  # comment\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "if (a != b && c <= d || !e) { x->y = z[i++]; }",
    "<html><body class=\"x\">Text &amp; more</body></html>",
    "https://example.com/path?query=1&other=two#frag",
    "café naïve résumé coöperate Zürich façade piñata",
    "Ελληνικά κείμενα, русский текст, українська мова",
    "中文文本测试，包括标点符号。日本語のテキストもあります。한국어 텍스트",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨",
    "עברית מימין לשמאל, والعربية أيضا ١٢٣ ٤٥٦",
    "हिन्दी पाठ और தமிழ் உரை",
    "math: ∑ x² + ½ ≤ ∞ → ⅓ Ⅻ ①②",
    "nbsp\u00a0here, ideographic\u3000space, thin\u2009space, nel\u0085x",
    "zero\u200bwidth\u200dchars and combining e\u0301 a\u0308",
    "mixed123abc456def 7a 8 9b",
    "______ ------ ====== ...... !!!!!! ??????",
    "'s 't 're 've 'm 'll 'd '' ''s",
    "<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|> <|im_start|",
    "a" * 300,
    " " * 100 + "x",
    "\n" * 50,
    "ab " * 200,
]

SPECIAL_CORPUS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>",
    "text<|im_end|>text <|im_start|> text",
    "<|im_start|user <|im_end",
]

PIECES = [
    "the", " the", "The", " cat", "sat", " on", " mat", "hello", "world", "Hello", "a", "I",
    " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\t\n", "\u00a0", "\u3000", "\u2003",
    "0", "1", "42", "2024", "3.14", "1,000", "٣", "²", "½", "Ⅻ",
    ".", ",", "!", "?", "...", "'", "\"", "'s", "'t", "'re", "'ll", "'d", "'ve", "'m", "n't",
    "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "-", "_", "=", "+", "*", "&", "#", "@",
    "é", "ü", "ñ", "ç", "ß", "Ω", "ж", "中", "文", "日本", "한", "😀", "👍🏽", "🇫🇷", "❤️",
    "\u200d", "\u0301", "ש", "ع", "ह", "ி", "€", "£", "→", "∑", "«", "»", "—", "–", "•",
    "def", "return", "int", "x", "_y", "i++", "==", "!=", "->", "::", "//", "/*", "*/",
]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tok-dump", required=True, help="path to the tok_dump tool")
    ap.add_argument("--model", required=True, help="SmolLM2 GGUF model")
    ap.add_argument("--random", type=int, default=400, help="number of random strings")
    ap.add_argument("--seed", type=int, default=1234)
    return ap.parse_args()


def read_vocab(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    pre = f["tokenizer.ggml.pre"].contents()
    return tokens, merges, types, pre


def byte_level_chars():
    """GPT-2's bytes_to_unicode, written out again here so that the oracle does not
    share code with the implementation under test."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def build_oracle(tokens, merges, types, with_specials):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = []
    for m in merges:
        i = m.index(" ", 1)
        pairs.append((m[:i], m[i + 1:]))
    bpe = models.BPE(vocab=vocab, merges=pairs, unk_token=None, fuse_unk=False,
                     byte_fallback=False)
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    if with_specials:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                               for t, ty in zip(tokens, types) if ty == TOKEN_TYPE_CONTROL])
    return tk


def random_codepoint(rng):
    import unicodedata
    while True:
        block = rng.choice([(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x52F), (0x590, 0x6FF),
                            (0x900, 0xDFF), (0x1100, 0x11FF), (0x2000, 0x2BFF),
                            (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
                            (0x1F300, 0x1FAFF), (0x10000, 0x1FFFF)])
        cp = rng.randint(*block)
        # Assigned, not a surrogate: both sides' Unicode tables agree on those.
        if unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co"):
            return chr(cp)


def random_strings(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 16)):
            if rng.random() < 0.8:
                parts.append(rng.choice(PIECES))
            else:
                parts.append(random_codepoint(rng))
        out.append("".join(parts))
    # One long text, to time the encoder on ~10 KB.
    out.append(" ".join(rng.choice(PIECES) for _ in range(4000))[:10000])
    return out


def run_tok_dump(tool, model, strings, special):
    cmd = [tool, model] + (["--special"] if special else [])
    data = "".join((s if isinstance(s, bytes) else s.encode("utf-8")).hex() + "\n"
                   for s in strings).encode()
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=600)
    if p.returncode != 0:
        print(f"FAIL: {' '.join(cmd)} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
        print("0 passed, 1 failed")
        sys.exit(1)
    lines = p.stdout.decode().split("\n")[:-1]
    if len(lines) != len(strings):
        print(f"FAIL: tok_dump printed {len(lines)} lines for {len(strings)} strings")
        print("0 passed, 1 failed")
        sys.exit(1)
    result = []
    for line in lines:
        ids, dec = line.split("\t")
        result.append(([int(x) for x in ids.split()], bytes.fromhex(dec)))
    return result, p.stderr.decode().strip()


def show_diff(s, ours, theirs, tokens):
    k = 0
    while k < min(len(ours), len(theirs)) and ours[k] == theirs[k]:
        k += 1
    lo = max(0, k - 3)
    print(f"  string: {s[:200]!r}{'...' if len(s) > 200 else ''}")
    print(f"  first difference at token {k}")
    print(f"  ours:   {[(i, tokens[i]) for i in ours[lo:k + 6]]}")
    print(f"  oracle: {[(i, tokens[i]) for i in theirs[lo:k + 6]]}")


def main():
    args = parse_args()
    if not os.path.exists(args.model):
        print(f"SKIP: model {args.model} is absent")
        print("0 passed, 0 failed, 1 skipped")
        return SKIP
    if not os.access(args.tok_dump, os.X_OK):
        print(f"FAIL: {args.tok_dump} is missing or not executable")
        print("0 passed, 1 failed")
        return 1
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        print("FAIL: the Python package 'tokenizers' is missing (scripts/setup.sh installs it)")
        print("0 passed, 1 failed")
        return 1

    tokens, merges, types, pre = read_vocab(args.model)
    if pre != "smollm":
        print(f"SKIP: the oracle knows the 'smollm' pre-tokenizer, the model says {pre!r}")
        print("0 passed, 0 failed, 1 skipped")
        return SKIP
    b2u = byte_level_chars()
    vocab = set(tokens)
    covered = {b for b in range(256) if b2u[b] in vocab}

    passed = failed = 0
    plain = build_oracle(tokens, merges, types, with_specials=False)
    strings = CORPUS + random_strings(args.random, args.seed)
    ours, summary = run_tok_dump(args.tok_dump, args.model, strings, special=False)
    for s, (ids, dec) in zip(strings, ours):
        theirs = plain.encode(s, add_special_tokens=False).ids
        want = bytes(b for b in s.encode("utf-8") if b in covered)
        if ids != theirs:
            failed += 1
            print("FAIL: ids differ")
            show_diff(s, ids, theirs, tokens)
        elif dec != want:
            failed += 1
            print(f"FAIL: decode differs for {s[:80]!r}: {dec[:80]!r} != {want[:80]!r}")
        else:
            passed += 1
    print(f"encode (parse_special off): {summary}")

    # Arbitrary bytes, invalid UTF-8 included: the oracle cannot take them, but our
    # round trip must still hold (less the bytes that have no token).
    rng = random.Random(args.seed + 1)
    blobs = [bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
             for _ in range(args.random)]
    ours, _ = run_tok_dump(args.tok_dump, args.model, blobs, special=False)
    for blob, (ids, dec) in zip(blobs, ours):
        want = bytes(b for b in blob if b in covered)
        if dec != want:
            failed += 1
            print(f"FAIL: byte round trip: {blob.hex()} decoded to {dec.hex()}")
        else:
            passed += 1

    special = build_oracle(tokens, merges, types, with_specials=True)
    ours, summary = run_tok_dump(args.tok_dump, args.model, SPECIAL_CORPUS, special=True)
    for s, (ids, _) in zip(SPECIAL_CORPUS, ours):
        theirs = special.encode(s, add_special_tokens=False).ids
        if ids != theirs:
            failed += 1
            print("FAIL: ids differ with parse_special")
            show_diff(s, ids, theirs, tokens)
        else:
            passed += 1

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
