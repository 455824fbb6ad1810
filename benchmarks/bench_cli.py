#!/usr/bin/env python
"""How long a tool takes to answer ``--help`` and a bad flag, against a bare ``python -c pass``, in one run.

Every command of ``gemseg`` (``retrieval/commands/``, also ``tools/<name>.py``) parses its flags
before it imports torch, faiss or the model, so ``--help`` and a bad flag should cost little more
than starting Python. For each tool: ``python tools/<tool>.py --help`` and ``python tools/<tool>.py
--no-such-flag`` (exit 2), ``--runs`` times each, interleaved with the baseline; the median, and
the ratio to the baseline's median. Goal: under 0.5 s each on the CPU.

    python benchmarks/bench_cli.py               # 5 runs each
    python benchmarks/bench_cli.py --runs 9 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def seconds(cmd: List[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args()
    tools = sorted(p.stem for p in (REPO / "tools").glob("*.py"))
    baseline = [sys.executable, "-c", "pass"]
    times: Dict[str, List[float]] = {"python -c pass": []}
    for _ in range(args.runs):  # interleaved, so a busy moment hits every row alike
        times["python -c pass"].append(seconds(baseline))
        for t in tools:
            for flag in ("--help", "--no-such-flag"):
                times.setdefault(f"{t} {flag}", []).append(seconds([sys.executable, f"tools/{t}.py", flag]))
    base = statistics.median(times["python -c pass"])
    rows = [[name, statistics.median(v), statistics.median(v) / base, max(v)] for name, v in times.items()]
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.runs} runs each, interleaved")
    print(markdown_table(["command", "median s", "× python -c pass", "max s"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps([dict(zip(["command", "median_s", "ratio", "max_s"], r)) for r in rows],
                                              indent=2))


if __name__ == "__main__":
    main()
