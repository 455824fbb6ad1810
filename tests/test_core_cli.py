"""retrieval.core.cli: the tools' shared plumbing: a closed stdout pipe ends quietly, the same
flags mean the same in every tool, one-line errors with exit code 2, boxes read from the command line."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
from conftest import REPO, run_tool

from retrieval.core.cli import COMMON_HELP, add_common_flags, main_wrapper, notice, parse_box
from retrieval.core.errors import DataError

TOOLS = ("index", "search", "evaluate", "coseg", "train_gem", "demo")


def test_a_closed_stdout_pipe_ends_quietly():
    script = ("from retrieval.core.cli import main_wrapper, print_json\n"
              "main_wrapper(lambda argv: print_json({'results': [{'path': 'x' * 50, 'n': i} for i in range(20000)]}))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout.read(10) == b'{\n  "resul'  # `head -c 10`, then the reader goes away
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


def test_every_tool_has_the_shared_flags_with_one_meaning():
    for tool in TOOLS:
        proc = run_tool(tool, "--help")
        assert proc.returncode == 0, (tool, proc.stderr)
        text = " ".join(proc.stdout.split())
        for flag in ("--config", "--device", "--quiet", "--json"):
            assert f"{flag} " in text or f"{flag}," in text, (tool, flag)
        for flag in ("device", "quiet", "json"):
            assert COMMON_HELP[flag] in text, (tool, flag)


def test_user_errors_are_one_line_and_exit_code_2(capsys):
    def bad(argv):
        raise DataError("no images in photos/")

    with pytest.raises(SystemExit) as e:
        main_wrapper(bad, [])
    assert e.value.code == 2 and capsys.readouterr().err == "error: no images in photos/\n"
    with pytest.raises(SystemExit) as e:
        main_wrapper(lambda argv: 0, [])
    assert e.value.code == 0


def test_boxes_and_notices():
    assert parse_box("1,2.5,30,40") == (1.0, 2.5, 30.0, 40.0)
    for bad in ("1,2,3", "a,b,c,d", "5,2,3,4"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_box(bad)
    ap = argparse.ArgumentParser()
    add_common_flags(ap)
    args = ap.parse_args(["--json", "--device", "cpu"])
    assert args.json and args.device == "cpu" and not args.quiet and not hasattr(args, "config")
    add_common_flags(ap2 := argparse.ArgumentParser(), config="", device=False)
    assert ap2.parse_args(["--config", "c.yaml"]).config == "c.yaml" 
    assert COMMON_HELP["config"] in " ".join(ap2.format_help().split())


def test_notices_go_to_stderr_under_json(capsys):
    notice("wrote hits.html", argparse.Namespace(json=False))
    notice("skipped 2 files", argparse.Namespace(json=True))
    out, err = capsys.readouterr()
    assert out == "wrote hits.html\n" and err == "skipped 2 files\n"
