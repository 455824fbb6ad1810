"""Shared plumbing for the command-line tools: one-line errors, exit codes, JSON output.

Tools in ``tools/`` stay thin: they build an ``argparse`` parser, call library functions and print.
:func:`main_wrapper` turns every :class:`~retrieval.errors.GemsegError` (and the usual OS errors on
user paths) into one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Optional, Sequence

from retrieval.core.errors import GemsegError

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def main_wrapper(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> None:
    """Run ``main(argv)`` (``None``: the command line) and exit with its code; user errors become
    one line and exit code 2.

    Set ``GEMSEG_DEBUG=1`` to see the full traceback of an error instead.
    """
    debug = os.environ.get("GEMSEG_DEBUG") == "1"
    try:
        code = main(argv)
    except GemsegError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        if debug:
            raise
        print(f"error: {e.strerror or e}: {e.filename}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (numpy scalars and paths converted)."""

    def default(o: Any) -> Any:
        if hasattr(o, "item"):
            return o.item()
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    print(json.dumps(obj, indent=2, default=default))
