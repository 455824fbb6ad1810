#!/usr/bin/env python
"""Describe a collection into resumable descriptor shards, on one process, torchrun or Slurm.

The same command as ``gemseg extract`` (``retrieval/commands/extract.py``: its flags, its help and what it
prints); ``python tools/extract.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("extract")

if __name__ == "__main__":
    main_wrapper(main)
