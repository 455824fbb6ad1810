#!/usr/bin/env python
"""Evaluate a descriptor model on a retrieval benchmark (revisited Oxford/Paris protocol).

The same command as ``gemseg evaluate`` (``retrieval/commands/evaluate.py``: its flags, its help and what it
prints); ``python tools/evaluate.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("evaluate")

if __name__ == "__main__":
    main_wrapper(main)
