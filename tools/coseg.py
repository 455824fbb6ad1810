#!/usr/bin/env python
"""Co-segment image sets with Deep Feature Factorization (NMF of CNN activations).

The same command as ``gemseg coseg`` (``retrieval/commands/coseg.py``: its flags, its help and what it
prints); ``python tools/coseg.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("coseg")

if __name__ == "__main__":
    main_wrapper(main)
