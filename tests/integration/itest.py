"""itest.py - shared helpers for the Python integration tests under tests/integration/.

Argument parsing (every script takes the binaries and the model as paths, so CTest can pass
its build's), running a binary with a time limit, spotting sanitizer reports, making tiny
models with `llm-gguf tiny`, and pass/fail bookkeeping that ends in the summary line
`N passed, M failed[, K skipped]`. Exit status: 0 all passed, 1 something failed, 77 nothing
failed but something was skipped because a required file (the default model) is absent.
What it does not do: know what any test checks.
"""
import argparse
import importlib.util
import os
import subprocess
import sys

SKIP = 77
TINY_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K",
              "Q8_K"]
# Types gguf.quants.dequantize (gguf 0.19) cannot decode: a numpy reference built on it
# cannot run them, and test_dequant.py checks them against its own decoder instead.
GGUF_PY_UNSUPPORTED = {"Q8_K"}
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "Sanitizer:DEADLYSIGNAL", "SUMMARY: UndefinedBehaviorSanitizer")


def parser(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--worker", required=True, help="path to llm-worker")
    ap.add_argument("--gguf-tool", required=True, help="path to llm-gguf")
    ap.add_argument("--model", required=True, help="the default model (GGUF)")
    ap.add_argument("--ref", help="path to ref_llama.py (default: ../reference/ beside this file)",
                    default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "..", "reference", "ref_llama.py"))
    ap.add_argument("--threads", type=int, default=2)
    return ap


def check_binaries(args):
    """Missing binaries are a build failure, not a skip."""
    for p in (args.worker, args.gguf_tool):
        if not os.access(p, os.X_OK):
            print(f"FAIL: binary {p} is missing or not executable")
            print("0 passed, 1 failed")
            sys.exit(1)


def load_ref(path):
    spec = importlib.util.spec_from_file_location("ref_llama", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Proc:
    """Result of run(): rc is the exit code, -N for signal N, None for a timeout."""
    def __init__(self, rc, out, err, cmd):
        self.rc, self.out, self.err, self.cmd = rc, out, err, cmd

    def err_lines(self):
        return [l for l in self.err.splitlines() if l.strip()]

    def sanitizer(self):
        return any(m in self.err for m in SANITIZER_MARKS)

    def describe(self):
        cmd = " ".join(str(c) if not isinstance(c, bytes) else repr(c) for c in self.cmd)
        return f"`{cmd}` rc={self.rc} stderr={self.err[-2000:]!r}"


def run(cmd, timeout_s=300, log_level="error", preexec_fn=None):
    """Runs cmd (a list; elements may be bytes) and captures stdout as bytes, stderr as text.
    preexec_fn runs in the child before exec (e.g. to set a resource limit)."""
    env = dict(os.environ, LLM_LOG_LEVEL=log_level)
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout_s, env=env,
                           preexec_fn=preexec_fn)
        return Proc(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"), cmd)
    except subprocess.TimeoutExpired as e:
        return Proc(None, e.stdout or b"", (e.stderr or b"").decode("utf-8", "replace"), cmd)


def make_tiny(gguf_tool, out_dir, dtype, seed=1, untied=False):
    path = os.path.join(out_dir, f"tiny-{dtype}-s{seed}{'-untied' if untied else ''}.gguf")
    if not os.path.exists(path):
        p = run([gguf_tool, "tiny", path, "--type", dtype, "--seed", str(seed)]
                + (["--untied"] if untied else []), 120)
        if p.rc != 0 or not os.path.exists(path):
            raise RuntimeError(f"llm-gguf tiny failed: {p.describe()}")
    return path


class Results:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}" + (f"  ({detail})" if detail else ""))
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}")
        sys.stdout.flush()
        return ok

    def skip(self, name, why):
        self.skipped += 1
        print(f"SKIP {name}: {why}")

    def finish(self):
        line = f"{self.passed} passed, {self.failed} failed"
        print(line + (f", {self.skipped} skipped" if self.skipped else ""))
        return 1 if self.failed else SKIP if self.skipped else 0


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A long-running binary (llm-worker, fake_coord, ...) started in the background.
    It is ready once its stdout shows `ready_mark`; stderr goes to a log file that
    stop() checks for sanitizer reports."""

    def __init__(self, cmd, log_path, ready_mark=b"ready", timeout_s=120, log_level="info"):
        """ready_mark None: do not wait (stdout goes to the log too); the caller checks
        readiness its own way, e.g. with wait_until()."""
        import time
        self.cmd, self.log_path = cmd, log_path
        self.log = open(log_path, "wb")
        env = dict(os.environ, LLM_LOG_LEVEL=log_level)
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE if ready_mark else self.log,
                                  stderr=self.log, env=env)
        self.lines = []
        if ready_mark is None:
            return
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if ready_mark in line:
                return
        self.kill()
        raise RuntimeError(f"{cmd[0]} did not start: {self.stderr()[-2000:]}")

    def stderr(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=15, timeout_s=120):
        """Signals the process and returns its exit code (None if it had to be killed)."""
        import signal
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        self.log.close()
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def sanitizer(self):
        return any(m in self.stderr() for m in SANITIZER_MARKS)

    def alive(self):
        return self.p.poll() is None


def wait_until(fn, timeout_s, interval_s=0.05):
    """Calls fn until it returns something truthy or timeout_s pass; returns its last value.
    For state that other processes change (a registry, a queue), polled, never slept on."""
    import time
    deadline = time.time() + timeout_s
    while True:
        v = fn()
        if v or time.time() >= deadline:
            return v
        time.sleep(interval_s)


# --- protobuf by hand, for the bytes no well-behaved client would send ---------------------
def pb_varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_field(num, wire, payload):
    """One field: wire 0 a varint (payload an int), wire 2 length-delimited (bytes)."""
    key = pb_varint((num << 3) | wire)
    if wire == 0:
        return key + pb_varint(payload)
    return key + pb_varint(len(payload)) + payload


def pb_envelope(version, body_num, body, request_id=0):
    return pb_field(1, 0, version) + (pb_field(2, 0, request_id) if request_id else b"") + \
        pb_field(body_num, 2, body)
