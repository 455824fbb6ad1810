#!/usr/bin/env python
"""Find duplicates in a photo collection: exact, near and similar groups, a keeper each, moves that undo.

The same command as ``gemseg dedup`` (``retrieval/commands/dedup.py``: its flags, its help and what it
prints); ``python tools/dedup.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("dedup")

if __name__ == "__main__":
    main_wrapper(main)
