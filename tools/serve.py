#!/usr/bin/env python
"""Serve an index over HTTP: a JSON API and a search page for the browser.

The same command as ``gemseg serve`` (``retrieval/commands/serve.py``: its flags, its help and what it
prints); ``python tools/serve.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("serve")

if __name__ == "__main__":
    main_wrapper(main)
