"""retrieval.commands.main: the ``gemseg`` command. Its subcommands are the tools (same flags, same
output), ``--help`` lists them, ``--version`` names the package's, a bad command or flag is one line
and exit 2, and parsing imports nothing heavy (torch, faiss, the model)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY_CONFIG, random_images, run_tool

from retrieval.commands import coseg, dedup, demo, evaluate, export, extract, index, search, serve, train
from retrieval.commands.main import build_parser, command_names, dispatch, job_of, parse, run_command, summary
from retrieval.core.errors import ConfigError

MODULES = {"coseg": coseg, "dedup": dedup, "demo": demo, "evaluate": evaluate, "extract": extract, "index": index,
           "search": search, "serve": serve, "train": train, "export": export}
#: per command, flags its own check() refuses (argparse alone would take them)
REFUSED = {"search": ["--query", "q.jpg", "--top", "0"], "extract": ["--images", "d", "--out", "o", "--shard-size", "0"],
           "serve": ["--port", "70000"], "coseg": ["--images", "d", "--k", "0"], "export": ["--onnx", "m.txt"],
           "dedup": ["--undo", "m.json", "--images", "d"]}
TOOLS = {"index": "index", "search": "search", "serve": "serve", "extract": "extract", "train": "train_gem",
         "coseg": "coseg", "evaluate": "evaluate", "demo": "demo", "export": "export", "dedup": "dedup"}


def gemseg(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """``gemseg ARGS`` as a process: the installed console script when there is one beside this
    Python (``pip install`` makes it), else the same entry point through ``-m``."""
    script = Path(sys.executable).with_name("gemseg")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "retrieval.commands.main"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=REPO, timeout=timeout)


def test_every_tool_is_a_command_and_the_other_way_round():
    assert set(command_names()) == set(TOOLS)
    assert {p.stem for p in (REPO / "tools").glob("*.py")} == set(TOOLS.values())
    for name, tool in TOOLS.items():
        assert f'tool_main("{name}")' in (REPO / "tools" / f"{tool}.py").read_text(encoding="utf-8")
        assert summary(name) and build_parser(name).format_help()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_command_names_a_job_that_exists_and_checks_its_flags(name, capsys):
    module = MODULES[name]
    job = job_of(module.JOB)  # the job's module is imported here, not when the command module is
    assert callable(job) and module.JOB.split(":")[1] == job.__name__
    assert callable(module.run) and callable(module.add_arguments)
    if name in REFUSED:
        with pytest.raises(SystemExit) as e:
            parse(name, REFUSED[name])
        assert e.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_help_lists_the_commands_and_version_names_the_package():
    out = gemseg("--help")
    assert out.returncode == 0, out.stderr
    for name in TOOLS:
        assert f"  {name} " in out.stdout
    version = gemseg("--version")
    assert version.returncode == 0 and version.stdout.startswith("gemseg ")
    assert gemseg("search", "--help").stdout.startswith("usage: gemseg search")


def test_a_bad_command_or_flag_is_one_line_and_exit_2(capsys):
    assert dispatch(["--bogus"]) == 2
    with pytest.raises(ConfigError, match="did you mean 'search'"):
        dispatch(["serch"])
    proc = gemseg("serch")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    with pytest.raises(SystemExit) as e:
        run_command("search", ["--top", "0", "--query", "q.jpg"])
    assert e.value.code == 2 and "--top must be ≥ 1" in capsys.readouterr().err


def test_parsing_imports_no_heavy_module():
    """What ``--help`` costs: the command modules and their parsers load without torch or faiss."""
    code = ("import sys; from retrieval.commands.main import command_names, build_parser\n"
            "for n in command_names(): build_parser(n).format_help()\n"
            "print(sorted(m for m in ('torch', 'faiss', 'retrieval.jobs', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_gemseg_search_is_tools_search(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    paths = random_images(tmp_path / "images", 5, size=(48, 64))
    made = run_tool("index", "--images", tmp_path / "images", "--out", tmp_path / "index", "--config",
                    tmp_path / "tiny.yaml", "--json")  # the index in this process: the search is the process
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["total"] == 5
    args = ["--query", paths[2], "--index", tmp_path / "index", "--top", "3", "--json"]
    by_command = gemseg("search", *args)
    assert by_command.returncode == 0, by_command.stderr
    by_tool = run_tool("search", *args)
    assert json.loads(by_command.stdout) == json.loads(by_tool.stdout)
    assert json.loads(by_tool.stdout)["results"][0]["hits"][0]["path"] == str(paths[2].resolve())
