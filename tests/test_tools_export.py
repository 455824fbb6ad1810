"""tools/export.py (gemseg export) end to end: the ONNX file it writes indexes a folder through
tools/index.py --model model.onnx with the torch model's descriptors (within 1e-4) and fingerprint,
so either engine's index is searched by the other; a re-export is byte-identical; bad input is one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, random_images, run_tool

from retrieval.commands import export as export_command
from retrieval.commands.main import build_parser
from retrieval.search.index import ImageIndex

CONFIG = """\
model:
  backbone: resnet18
  weights: none
  image_size: 64
  scales: [1.0, 0.7071, 0.5]
extract:
  batch_size: 4
  workers: 0
"""


@pytest.mark.slow
def test_export_then_index_on_onnxruntime(tmp_path):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    paths = random_images(tmp_path / "images", 6, size=(48, 64), seed=2)
    made = run_tool("export", "--config", tmp_path / "tiny.yaml", "--onnx", tmp_path / "m.onnx", "--json")
    assert made.returncode == 0, made.stderr
    rep = json.loads(made.stdout)
    assert rep["dim"] == 512 and rep["outputs"] == ["pooled", "descriptor"]
    again = json.loads(run_tool("export", "--config", tmp_path / "tiny.yaml", "--onnx", tmp_path / "m2.onnx",
                                "--json").stdout)
    assert again["sha256"] == rep["sha256"]

    for name, model in (("torch", ["--config", tmp_path / "tiny.yaml"]), ("onnx", ["--model", tmp_path / "m.onnx"])):
        done = run_tool("index", "--images", tmp_path / "images", "--out", tmp_path / name, *model, "--json")
        assert done.returncode == 0, done.stderr
    a, b = ImageIndex.load(tmp_path / "torch"), ImageIndex.load(tmp_path / "onnx")
    assert a.fingerprint == b.fingerprint == rep["fingerprint"]
    assert [str(p) for p in a.paths.many(range(6))] == [str(p) for p in b.paths.many(range(6))]
    np.testing.assert_allclose(b.descriptors(), a.descriptors(), atol=1e-4)

    hits = {}
    for name in ("torch", "onnx"):  # the ONNX index searched with its ONNX model (recorded), and the other way round
        res = run_tool("search", "--index", tmp_path / name, "--query", paths[3], "--top", "3", "--json")
        assert res.returncode == 0, res.stderr
        hits[name] = [h["path"] for h in json.loads(res.stdout)["results"][0]["hits"]]
    assert hits["torch"] == hits["onnx"] and hits["onnx"][0] == str(paths[3].resolve())


def test_bad_input_is_one_line(tmp_path):
    bad_name = run_tool("export", "--onnx", tmp_path / "m.txt")  # argparse: its usage, then one error line
    assert bad_name.returncode == 2 and "error: --onnx: the file name must end in .onnx" in bad_name.stderr
    assert_one_line_error(run_tool("export", "--onnx", tmp_path / "m.onnx", "--model", tmp_path / "nope.pt"),
                          "not found")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert_one_line_error(run_tool("export", "--onnx", tmp_path / "m.onnx", "--model", tmp_path / "junk.pth"),
                          "cannot read")
    assert not (tmp_path / "m.onnx").exists()


def test_the_command_lists_its_flags_and_job():
    assert export_command.JOB == "retrieval.jobs:run_export"
    text = build_parser("export").format_help()
    for flag in ("--onnx", "--model", "--image-size", "--scales", "--opset", "--json"):
        assert flag in text
