#!/usr/bin/env python
"""Index a folder of images (or a .txt list of paths) for search.

The same command as ``gemseg index`` (``retrieval/commands/index.py``: its flags, its help and what it
prints); ``python tools/index.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("index")

if __name__ == "__main__":
    main_wrapper(main)
