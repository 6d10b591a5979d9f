"""bench_coord.py - the coordinator's figures for docs/BENCHMARKS.md, with synthetic workers
(issue "Coordinator core"):

  - routing overhead: p50/p99 latency of 1-token requests through the coordinator minus the
    same requests sent straight to the worker (one stream at a time)
  - coordinator CPU time per routed request, and the request rate it sustains with 1-token
    requests (closed loop, load generator, workers and coordinator on the same cores)
  - load imbalance across 32 workers under least_loaded and p2c
  - failover stall: time from `kill -9` of the worker serving a stream to the next token
    the client receives

Usage: python3 scripts/bench_coord.py BUILD_DIR   (run by scripts/bench.sh coord)
"""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import itest  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def load(build, addr, reqs, concurrency):
    cmd = [os.path.join(build, "client", "llm-load"), "--addr", addr,
           "--concurrency", str(concurrency), "-"]
    p = subprocess.run(cmd, input=json.dumps({"requests": reqs}).encode(), capture_output=True,
                       timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode()[-2000:])
    out = json.loads(p.stdout)
    bad = [r for r in out["results"] if not r["ok"]]
    if bad:
        raise RuntimeError(json.dumps(bad[:3]))
    return out


class Cluster:
    """A coordinator and n synthetic workers that register with it."""

    def __init__(self, build, n, policy, step_us=100, run_dir=None, coord_args=("--http-port", "-1")):
        self.build = build
        self.rpc = f"tcp://127.0.0.1:{itest.free_port()}"
        self.reg = f"tcp://127.0.0.1:{itest.free_port()}"
        self.dir = run_dir or os.path.join(build, "bench-coord")
        os.makedirs(self.dir, exist_ok=True)
        self.coord = itest.Server(
            [os.path.join(build, "coordinator", "llm-coordinator"), "--listen", self.rpc,
             "--register-listen", self.reg, "--models",
             f"synthetic tokenizer=synthetic policy={policy}", *coord_args],
            os.path.join(self.dir, "coordinator.log"), log_level="warn")
        self.workers = []
        self.addrs = []
        for i in range(n):
            self.start_worker(i, step_us)
        self.wait_ready(n)

    def start_worker(self, i, step_us):
        addr = f"tcp://127.0.0.1:{itest.free_port()}"
        w = itest.Server([os.path.join(self.build, "worker", "llm-worker"), "--engine",
                          "synthetic", "--synthetic-step-us", str(step_us), "--listen", addr,
                          "--coordinator", self.reg, "--worker-id", f"w{i}",
                          "--heartbeat-ms", "500", "--threads", "1"],
                         os.path.join(self.dir, f"worker-{i}.log"), log_level="warn")
        if i < len(self.workers):
            self.workers[i], self.addrs[i] = w, addr
        else:
            self.workers.append(w)
            self.addrs.append(addr)

    def stats(self):
        p = subprocess.run([os.path.join(self.build, "client", "llmctl"), "--addr", self.rpc,
                            "stats"], capture_output=True, timeout=30)
        return p.stdout.decode()

    def routed(self):
        out = {}
        for line in self.stats().splitlines():
            if line.startswith("llm_coord_routed_total{"):
                w = line.split('worker="')[1].split('"')[0]
                out[w] = int(float(line.rsplit(" ", 1)[1]))
        return out

    def ready(self):
        n = 0
        for line in self.stats().splitlines():
            if line.startswith('llm_coord_workers{state="ready"}'):
                n = int(float(line.rsplit(" ", 1)[1]))
        return n

    def wait_ready(self, n, timeout_s=60):
        t0 = time.time()
        while self.ready() < n:
            if time.time() - t0 > timeout_s:
                raise RuntimeError(f"only {self.ready()} of {n} workers ready")
            time.sleep(0.1)

    def stop(self):
        for w in self.workers:
            w.kill()
        self.coord.stop()


def one_token(i):
    return {"prompt": f"request {i}", "max_tokens": 1, "temperature": 0}


def overhead(build):
    c = Cluster(build, 1, "least_loaded")
    try:
        n = 2000
        reqs = [one_token(i) for i in range(n)]
        load(build, c.addrs[0], reqs[:200], 1)  # warm-up
        load(build, c.rpc, reqs[:200], 1)
        direct = load(build, c.addrs[0], reqs, 1)
        t_cpu = cpu_s(c.coord.p.pid)
        via = load(build, c.rpc, reqs, 1)
        cpu = cpu_s(c.coord.p.pid) - t_cpu
        d = [r["e2e_ms"] for r in direct["results"]]
        v = [r["e2e_ms"] for r in via["results"]]
        print("### Routing overhead (1 synthetic worker, 1-token requests, one at a time)\n")
        print("| path | requests | p50 ms | p99 ms |")
        print("|---|---|---|---|")
        print(f"| straight to the worker | {n} | {pct(d, 50):.3f} | {pct(d, 99):.3f} |")
        print(f"| through the coordinator | {n} | {pct(v, 50):.3f} | {pct(v, 99):.3f} |")
        print(f"| added by the coordinator | | {pct(v, 50) - pct(d, 50):.3f} | "
              f"{pct(v, 99) - pct(d, 99):.3f} |")
        print(f"\nCoordinator CPU per request at this rate: {cpu / n * 1e6:.0f} us\n")
    finally:
        c.stop()


def rate(build):
    c = Cluster(build, 4, "least_loaded", step_us=0)
    try:
        print("### Sustained rate, 1-token requests (4 synthetic workers, closed loop)\n")
        print("| concurrency | requests | wall s | req/s | p50 ms | p99 ms | "
              "coordinator CPU us/request |")
        print("|---|---|---|---|---|---|---|")
        load(build, c.rpc, [one_token(i) for i in range(500)], 16)  # warm-up
        for conc in (16, 64):
            n = 20000
            t_cpu = cpu_s(c.coord.p.pid)
            out = load(build, c.rpc, [one_token(i) for i in range(n)], conc)
            cpu = cpu_s(c.coord.p.pid) - t_cpu
            e = [r["e2e_ms"] for r in out["results"]]
            print(f"| {conc} | {n} | {out['wall_s']:.2f} | {n / out['wall_s']:.0f} | "
                  f"{pct(e, 50):.2f} | {pct(e, 99):.2f} | {cpu / n * 1e6:.0f} |")
        print()
    finally:
        c.stop()


def imbalance(build):
    """How evenly requests spread: each worker's share of 32,000 routed requests while 64
    run at once (with so few in flight per worker, sampled in-flight counts are mostly
    sampling noise; the shares are what the policy decided)."""
    print("### Load imbalance across 32 synthetic workers (20 ms steps, 64 concurrent "
          "4-token requests)\n")
    print("| policy | requests | routed per worker min / mean / max | (max - mean) / mean |")
    print("|---|---|---|---|")
    for policy in ("least_loaded", "p2c"):
        # 20 ms steps: the cores are not saturated, so every worker runs at the same speed
        # and the shares show the policy, not the OS scheduler.
        c = Cluster(build, 32, policy, step_us=20000)
        try:
            n = 32000
            reqs = [{"prompt": f"request {i}", "max_tokens": 4, "temperature": 0}
                    for i in range(n)]
            load(build, c.rpc, reqs, 64)
            counts = list(c.routed().values())
            mean = statistics.mean(counts)
            print(f"| {policy} | {n} | {min(counts)} / {mean:.0f} / {max(counts)} | "
                  f"{(max(counts) - mean) / mean * 100:.1f}% |")
        finally:
            c.stop()
    print()


def inflight(c):
    out = {}
    for line in c.stats().splitlines():
        if line.startswith("llm_coord_worker_inflight{"):
            out[line.split('worker="')[1].split('"')[0]] = int(float(line.rsplit(" ", 1)[1]))
    return out


def stall(build):
    """Stream a long output through the coordinator, kill -9 the worker serving it, and
    time the longest gap between the bytes the client receives after the kill."""
    c = Cluster(build, 2, "round_robin", step_us=2000)
    gaps = []
    try:
        for trial in range(5):
            ctl = subprocess.Popen([os.path.join(build, "client", "llmctl"), "--addr", c.rpc,
                                    "generate", "--max-tokens", "600", "--temperature", "0",
                                    f"stall trial {trial}"], stdout=subprocess.PIPE)
            fd = ctl.stdout.fileno()
            reads = []
            os.read(fd, 16)  # the stream has started
            busy = inflight(c)
            victim = int(max(busy, key=busy.get)[1:])
            t_kill = time.monotonic()
            c.workers[victim].kill()
            while True:
                b = os.read(fd, 4096)
                if not b:
                    break
                reads.append(time.monotonic())
            ctl.wait(timeout=60)
            prev, gap = t_kill, 0.0
            for t in reads:
                gap = max(gap, t - prev)
                prev = t
            gaps.append(gap * 1000)
            c.start_worker(victim, 2000)
            c.wait_ready(2)
    finally:
        c.stop()
    print("### Failover stall (kill -9 of the worker serving a stream; synthetic, 2 ms/token)\n")
    print(f"Longest gap in the client's stream after the kill, 5 trials: "
          f"{', '.join(f'{g:.1f}' for g in gaps)} ms (median {statistics.median(gaps):.1f} ms)\n")


def main():
    build = sys.argv[1]
    which = sys.argv[2:] or ["overhead", "rate", "imbalance", "stall"]
    for w in which:
        globals()[w](build)


if __name__ == "__main__":
    main()
