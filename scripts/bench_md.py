"""bench_md.py - puts one benchmark section's output into docs/BENCHMARKS.md.

  python3 scripts/bench_md.py NAME OUTPUT_FILE "COMMAND"

The section lives between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; it is
replaced whole (with a line saying when, by which command, on which machine) or, the
first time, appended at the end of the file. What lies outside the markers (the
analysis written by hand) is never touched.
"""
import datetime
import os
import platform
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DOC = os.path.join(ROOT, "docs", "BENCHMARKS.md")


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs, {cpu}"


def main():
    name, path, command = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(path) as f:
        lines = f.read().strip().splitlines()
    # The targets' first line ("# Engine, 2 CPUs: ...") says what the Generated line says.
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = "\n".join(lines).strip()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- bench:{name} -->\n_Generated {when} by `{command}` on {machine()}._\n\n"
             f"{body}\n<!-- /bench:{name} -->")
    with open(DOC) as f:
        doc = f.read()
    pat = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->",
                     re.S)
    if pat.search(doc):
        doc = pat.sub(lambda m: block, doc)
    else:
        doc = doc.rstrip("\n") + f"\n\n## Generated: {name}\n\n{block}\n"
    with open(DOC, "w") as f:
        f.write(doc)
    print(f"bench_md: docs/BENCHMARKS.md section '{name}' updated")


if __name__ == "__main__":
    main()
