#!/usr/bin/env python
"""The built-in demo: a collection made from real photos, indexed, searched and scored.

The same command as ``gemseg demo`` (``retrieval/commands/demo.py``: its flags, its help and what it
prints); ``python tools/demo.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("demo")

if __name__ == "__main__":
    main_wrapper(main)
