#!/usr/bin/env python
"""Search an index with one or more query images.

The same command as ``gemseg search`` (``retrieval/commands/search.py``: its flags, its help and what it
prints); ``python tools/search.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("search")

if __name__ == "__main__":
    main_wrapper(main)
