"""Shared plumbing for the command-line tools: one-line errors, exit codes, JSON output.

Tools in ``tools/`` stay thin: they build an ``argparse`` parser, call library functions and print.
:func:`main_wrapper` turns every :class:`~retrieval.core.errors.GemsegError` (and the usual OS errors on
user paths) into one line on stderr and exit code 2, and a closed stdout pipe (``| head``) into a
quiet exit 141. :func:`add_common_flags` gives every tool the same ``--config``, ``--device``,
``--quiet`` and ``--json``; :func:`notice` prints what is not the result (stderr under ``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Optional, Sequence, Tuple

from retrieval.core.errors import GemsegError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`

#: The help of the flags every tool shares, so that each means the same everywhere.
COMMON_HELP = {
    "config": "YAML settings file (model:, extract:, index:, train:, coseg: sections; "
              "default: the settings of configs/default.yaml)",
    "device": "cpu | cuda | cuda:N (default: the config's device, else CUDA when available); "
              "a missing CUDA device is an error, never a silent fallback",
    "quiet": "no progress bars (results, notices and errors still print)",
    "json": "print the result as one JSON document on stdout; notices go to stderr",
}


def main_wrapper(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> None:
    """Run ``main(argv)`` (``None``: the command line) and exit with its code; user errors become
    one line and exit code 2.

    Set ``GEMSEG_DEBUG=1`` to see the full traceback of an error instead.
    """
    debug = os.environ.get("GEMSEG_DEBUG") == "1"
    try:
        code = main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
    except BrokenPipeError:
        # the reader of stdout went away (`tools/search.py --json | head`): stop quietly, as a
        # Unix tool killed by SIGPIPE does (exit status 128 + 13)
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
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


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null so that the interpreter's final flush of a closed
    pipe does not print "Exception ignored … BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (tests capture it)
        pass


def add_common_flags(ap: argparse.ArgumentParser, *, config: Optional[str] = None, device: bool = True,
                     quiet: bool = True, json_out: bool = True) -> None:
    """Add the shared flags ``--config`` (with ``config`` as its help, or :data:`COMMON_HELP`'s when
    ``""``; ``None``: no ``--config``), ``--device``, ``--quiet`` and ``--json`` to ``ap``, each with
    the one meaning and help text of :data:`COMMON_HELP`."""
    if config is not None:
        ap.add_argument("--config", metavar="YAML", help=config or COMMON_HELP["config"])
    if device:
        ap.add_argument("--device", help=COMMON_HELP["device"])
    if quiet:
        ap.add_argument("--quiet", action="store_true", help=COMMON_HELP["quiet"])
    if json_out:
        ap.add_argument("--json", action="store_true", help=COMMON_HELP["json"])


def parse_box(text: str) -> Tuple[float, float, float, float]:
    """argparse type of ``--box x1,y1,x2,y2`` (pixels of the original image, x2 > x1, y2 > y1)."""
    try:
        v = tuple(float(t) for t in text.replace(" ", "").split(","))
    except ValueError:
        v = ()
    if len(v) != 4:
        raise argparse.ArgumentTypeError(f"'{text}': expected four numbers x1,y1,x2,y2 (pixels)")
    if v[2] <= v[0] or v[3] <= v[1] or min(v) < 0:
        raise argparse.ArgumentTypeError(f"'{text}': need 0 ≤ x1 < x2 and 0 ≤ y1 < y2 (pixels)")
    return v  # type: ignore[return-value]


def notice(text: str, args: argparse.Namespace) -> None:
    """Print a notice (``wrote hits.html``, ``skipped …``): on stdout, but on stderr with ``--json``
    (stdout then holds only the JSON document)."""
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (numpy scalars and paths converted), text and final
    newline in one write: ranks of torchrun / srun sharing a pipe then cannot slip their output in
    between (``print`` writes the newline separately on an unbuffered stream, which split two
    ranks' reports as ``}{``; a report over the pipe's atomic size, 4 KiB, can still interleave)."""

    def default(o: Any) -> Any:
        if hasattr(o, "item"):
            return o.item()
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    text = json.dumps(obj, indent=2, default=default) + "\n"
    buf = getattr(sys.stdout, "buffer", None)
    if buf is None:  # a text-only stream (captured output)
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    sys.stdout.flush()
    data = memoryview(text.encode(sys.stdout.encoding or "utf-8"))
    while data:  # an unbuffered stdout (python -u) may write part of it: write the rest, or fail
        n = buf.write(data)
        data = data[len(data) if n is None else n:]
    buf.flush()
