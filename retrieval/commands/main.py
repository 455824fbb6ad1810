"""The ``gemseg`` command: ``gemseg <command> [flags]``, one module of this package per command.

A command module (``retrieval/commands/<name>.py``) holds the command's help (its docstring, or
``description()`` when it is made at run time), its
flags (``add_arguments(ap)``, optionally ``check(ap, args)`` for checks argparse cannot make), the
job it runs (``JOB = "module:function"``, usually a function of :mod:`retrieval.jobs`) and how the
job's result is printed (``run(args, job) -> exit code``). The same module serves ``gemseg <name>``
and ``tools/<name>.py``, so both take the same flags and print the same output.

Nothing heavy is imported before the arguments are parsed: command modules import only argparse
and :mod:`retrieval.core.cli`, and the job's module (torch, faiss, the model) is imported by name
once the flags are good, so ``--help`` and a bad flag answer at once. That import goes through
:func:`importlib.import_module` on purpose: it is the one place where a module is loaded late.

**A new command is one file** here (``add_arguments``, ``JOB``, ``run``), plus its thin
``tools/<name>.py`` when it should also run from a checkout; ``gemseg --help`` lists it.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, List, Optional, Sequence

from retrieval.core.cli import main_wrapper
from retrieval.core.errors import ConfigError, did_you_mean

#: Modules of the package that are not commands.
_NOT_COMMANDS = {"main"}


def command_names() -> List[str]:
    """Every command: the package's modules (nothing imported)."""
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)])
                  if m.name not in _NOT_COMMANDS and not m.name.startswith("_"))


def command_module(name: str) -> ModuleType:
    """The module of command ``name`` (a one-line ConfigError for an unknown one)."""
    if name not in command_names():
        raise ConfigError(f"unknown command '{name}'{did_you_mean(name, command_names())}; "
                          f"choose from: {', '.join(command_names())}")
    return importlib.import_module(f"{__package__}.{name}")


def summary(name: str) -> str:
    """The first sentence of command ``name``'s help."""
    para = " ".join((command_module(name).__doc__ or "").strip().split("\n\n")[0].split())
    return para.split(". ")[0].rstrip(".")


def build_parser(name: str, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of command ``name`` (``prog``: how the help names it)."""
    mod = command_module(name)
    describe: Optional[Callable[[], str]] = getattr(mod, "description", None)
    ap = argparse.ArgumentParser(prog=prog, description=describe() if describe else mod.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(ap)
    return ap


def parse(name: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    """Parse and check the flags of command ``name`` (argparse's usage line and exit 2 when bad)."""
    ap = build_parser(name, prog)
    args = ap.parse_args(argv)
    check: Optional[Callable[[argparse.ArgumentParser, argparse.Namespace], None]] = \
        getattr(command_module(name), "check", None)
    if check is not None:
        check(ap, args)
    return args


def job_of(spec: str) -> Callable[..., Any]:
    """The function ``"module:function"`` names, its module imported now (after parsing)."""
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def run_command(name: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Parse ``argv`` for command ``name``, run its job and print its result; the exit code."""
    args = parse(name, argv, prog)
    mod = command_module(name)
    return int(mod.run(args, job_of(mod.JOB)) or 0)


def tool_main(name: str) -> Callable[[Optional[Sequence[str]]], int]:
    """``main(argv)`` of ``tools/<tool>.py`` for command ``name``."""
    def main(argv: Optional[Sequence[str]] = None) -> int:
        return run_command(name, argv, prog=Path(sys.argv[0]).name if argv is None else None)
    return main


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("gemseg")
    except (ImportError, PackageNotFoundError):  # running from a checkout that was never installed
        return "unknown (not installed)"


def _usage() -> str:
    names = command_names()
    width = max(len(n) for n in names)
    lines = ["usage: gemseg [--version] [--help] <command> [flags]   (gemseg <command> --help: its flags)", "",
             "commands:"]
    lines += [f"  {n:<{width}}  {summary(n)}" for n in names]
    return "\n".join(lines)


def dispatch(argv: Optional[Sequence[str]] = None) -> int:
    """``gemseg`` itself: ``--version``, ``--help`` (the commands, one line each), or a command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"gemseg {_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name.startswith("-"):
        print(_usage(), file=sys.stderr)
        print(f"\ngemseg: error: unknown option '{name}'", file=sys.stderr)
        return 2
    return run_command(name, rest, prog=f"gemseg {name}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The console script ``gemseg`` (``[project.scripts]``): one-line errors, exit code 2."""
    main_wrapper(dispatch, argv)



if __name__ == "__main__":
    main()
