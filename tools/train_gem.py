#!/usr/bin/env python
"""Fine-tune a GeM descriptor on matching pairs (contrastive loss, hard negatives re-mined each epoch).

The same command as ``gemseg train`` (``retrieval/commands/train.py``: its flags, its help and what it
prints); ``python tools/train_gem.py --help`` lists the flags.
"""
from __future__ import annotations

from retrieval.commands.main import tool_main
from retrieval.core.cli import main_wrapper

main = tool_main("train")

if __name__ == "__main__":
    main_wrapper(main)
