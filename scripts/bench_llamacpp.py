"""bench_llamacpp.py - our engine against llama.cpp on the same GGUF files and the same cores.

llama.cpp is the CPU engine people compare against. Its source comes from PyPI (the
llama-cpp-python sdist vendors it, at the pinned version below), built once with
-march=native into .cache/ (a few minutes on two cores); its own benchmark programs
then time the same tests ours do:

  - prefill of a 512-token prompt          llama-bench -p 512 -n 0
  - decode of 128 tokens after 512         llama-bench -p 0 -n 128 -d 512
  - 16 sequences: 32-token prompts, 64     llama-batched-bench -npp 32 -ntg 64 -npl 16
    decode steps (aggregate decode tok/s)

and llm-engine-bench times ours (the same sizes). Each file is timed by both engines in
alternating order, ROUNDS times, and the best of each is kept (this VM's speed drifts by
2x within minutes; best-of-interleaved compares like with like).

Usage: python3 scripts/bench_llamacpp.py BUILD_DIR MODEL   (run by scripts/bench.sh llamacpp)
Environment: LLM_LLAMACPP_TYPES (default "Q4_1 Q4_0 Q4_K Q5_K Q6_K Q8_0"; Q4_1 is MODEL
itself, the others llm-quantize's re-quantizations of it), LLM_BENCH_ROUNDS (default 2).
"""
import glob
import json
import os
import re
import subprocess
import sys
import tarfile

VERSION = "0.3.36"  # llama-cpp-python; its vendor/llama.cpp is what gets built
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CACHE = os.path.join(ROOT, ".cache", f"llama.cpp-{VERSION}")
BIN = os.path.join(CACHE, "build", "bin")


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def build_llamacpp():
    if os.path.exists(os.path.join(BIN, "llama-bench")) and \
            os.path.exists(os.path.join(BIN, "llama-batched-bench")):
        return
    os.makedirs(CACHE, exist_ok=True)
    dl = os.path.join(CACHE, "dl")
    run([os.path.join(ROOT, ".venv", "bin", "pip"), "download", "-q", "--no-deps",
         "--no-binary", ":all:", f"llama-cpp-python=={VERSION}", "-d", dl])
    sdist = glob.glob(os.path.join(dl, f"llama_cpp_python-{VERSION}.tar.gz"))[0]
    with tarfile.open(sdist) as t:
        t.extractall(CACHE, filter="data")
    src = os.path.join(CACHE, f"llama_cpp_python-{VERSION}", "vendor", "llama.cpp")
    bld = os.path.join(CACHE, "build")
    print(f"building llama.cpp {VERSION} (vendored by llama-cpp-python) in {bld} ...",
          file=sys.stderr)
    run(["cmake", "-S", src, "-B", bld, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
         "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
         "-DLLAMA_BUILD_SERVER=OFF"])
    run(["cmake", "--build", bld, "-j", str(os.cpu_count() or 2), "--target", "llama-bench",
         "llama-batched-bench"])


def theirs(path, threads):
    """llama.cpp's prefill and decode tok/s for each thread count, and its 16-sequence
    aggregate decode tok/s at the last one."""
    out = {}
    for args in (["-p", "512", "-n", "0"], ["-p", "0", "-n", "128", "-d", "512"]):
        for line in run([os.path.join(BIN, "llama-bench"), "-m", path, "-r", "3", "-o", "jsonl",
                         "-t", ",".join(map(str, threads))] + args).splitlines():
            r = json.loads(line)
            key = "prefill" if r["n_prompt"] else "decode"
            out[(key, r["n_threads"])] = r["avg_ts"]
    lines = run([os.path.join(BIN, "llama-batched-bench"), "-m", path, "-t", str(threads[-1]),
                 "-c", "4096", "-npp", "32", "-ntg", "64", "-npl", "16", "--output-format",
                 "jsonl"]).splitlines()
    r = json.loads([x for x in lines if x.startswith("{")][-1])
    out[("batch16", threads[-1])] = r["speed_tg"]
    return out


def ours(build, path, threads):
    exe = os.path.join(build, "worker", "llm-engine-bench")
    out = {}
    table = run([exe, "--model", path, "--threads", ",".join(map(str, threads)), "--reps", "3"])
    # | threads | read GB/s | triad GB/s | prefill | decode, short prompt | / bound |
    # decode after the 512-token prompt | ...
    row = r"^\| (\d+) \| [\d.]+ \| [\d.]+ \| ([\d.]+) \| [\d.]+ \| [^|]+ \| ([\d.]+) \|"
    for m in re.finditer(row, table, re.M):
        out[("prefill", int(m[1]))] = float(m[2])
        out[("decode", int(m[1]))] = float(m[3])
    batched = run([exe, "--model", path, "--threads", str(threads[-1]), "--reps", "1",
                   "--prompt-tokens", "16", "--decode-tokens", "16", "--batch", "16"])
    m = re.search(r"^\| 16 \| ([\d.]+) \|", batched, re.M)
    out[("batch16", threads[-1])] = float(m[1])
    return out


def main():
    build, model = sys.argv[1], sys.argv[2]
    types = os.environ.get("LLM_LLAMACPP_TYPES", "Q4_1 Q4_0 Q4_K Q5_K Q6_K Q8_0").split()
    rounds = int(os.environ.get("LLM_BENCH_ROUNDS", "2"))
    threads = [1, 2]
    build_llamacpp()
    base = os.path.splitext(os.path.basename(model))[0]
    v = subprocess.run([os.path.join(BIN, "llama-bench"), "--version"], capture_output=True,
                       text=True)
    v = re.search(r"version: (.*)", v.stdout + v.stderr)
    print(f"llama.cpp {v[1] if v else '?'} (llama-cpp-python {VERSION}, -march=native); "
          f"best of {rounds} interleaved rounds")
    print()
    print("| file | threads | prefill 512 ours | llama.cpp | ours / llama.cpp | "
          "decode @512 ours | llama.cpp | ours / llama.cpp |")
    print("|---|---|---|---|---|---|---|---|")
    batch_rows = []
    for t in types:
        path = model if t == "Q4_1" else os.path.join(ROOT, "models", "bench", f"{base}.{t}.gguf")
        if not os.path.exists(path):
            run([os.path.join(build, "worker", "llm-quantize"), model, path, t])
        best_o, best_t = {}, {}
        for i in range(rounds):
            order = (ours, theirs) if i % 2 == 0 else (theirs, ours)
            for f in order:
                got = f(build, path, threads) if f is ours else f(path, threads)
                best = best_o if f is ours else best_t
                for k, v in got.items():
                    best[k] = max(best.get(k, 0.0), v)
        size = os.path.getsize(path) / 2**20
        for n in threads:
            p_o, p_t = best_o[("prefill", n)], best_t[("prefill", n)]
            d_o, d_t = best_o[("decode", n)], best_t[("decode", n)]
            print(f"| {t} ({size:.0f} MiB) | {n} | {p_o:.0f} | {p_t:.0f} | {p_o / p_t:.2f}x | "
                  f"{d_o:.1f} | {d_t:.1f} | {d_o / d_t:.2f}x |", flush=True)
        b_o, b_t = best_o[("batch16", threads[-1])], best_t[("batch16", threads[-1])]
        batch_rows.append(f"| {t} | {b_o:.0f} | {b_t:.0f} | {b_o / b_t:.2f}x |")
    print()
    print(f"16 sequences, 32-token prompts, 64 decode steps, {threads[-1]} threads "
          "(aggregate decode tok/s):")
    print()
    print("| file | ours | llama.cpp | ours / llama.cpp |")
    print("|---|---|---|---|")
    print("\n".join(batch_rows))


if __name__ == "__main__":
    main()
