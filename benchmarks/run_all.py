#!/usr/bin/env python
"""Run every benchmark in this folder (bench_*.py) in turn; each prints its own markdown tables.

  python benchmarks/run_all.py            # or: make bench
"""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(p.name for p in HERE.glob("bench_*.py"))

if __name__ == "__main__":
    code = 0
    for s in SCRIPTS:
        if (HERE / s).is_file():
            print(f"\n## {s}\n", flush=True)
            code |= subprocess.call([sys.executable, str(HERE / s)])
    sys.exit(code)
