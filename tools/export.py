#!/usr/bin/env python
"""Write a descriptor model as ONNX.

The same command as ``gemseg export`` (``retrieval/commands/export.py``: its flags, its help and what it
prints); ``python tools/export.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("export")

if __name__ == "__main__":
    main_wrapper(main)
