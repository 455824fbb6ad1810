"""tools/index.py as a user runs it: odd images, bad input, --json; concepts, compaction,
indexes built from descriptor shards (also by two ranks), changed and vanished files."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import random_images

from cosegment.concept_file import save_concepts


def _tool_main(name: str):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_tools_index_and_search_with_concepts(small_net, tmp_path, tiny_config, capsys):
    import json

    from retrieval.core.cli import main_wrapper

    imgs = tmp_path / "imgs"
    random_images(imgs, 3, size=(48, 64))
    H = np.abs(np.random.default_rng(2).normal(size=(2, 512))).astype(np.float32)
    good = save_concepts(tmp_path / "c.pt", H, small_net.backbone.fingerprint(), "layer4", object_factors=[0])
    out = tmp_path / "ix"
    assert _tool_main("index")(["--images", str(imgs), "--config", str(tiny_config), "--out", str(out),
                                "--concepts", str(good), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["added"] == 3
    meta = json.loads((out / "meta.json").read_text())
    assert json.dumps(meta).count(str(good.resolve())) >= 1  # the index records its concept file
    q = sorted(imgs.rglob("*.jpg"))[0]
    assert _tool_main("search")(["--query", str(q), "--index", str(out), "--top", "1", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["results"][0]["hits"][0]
    assert hit["path"].endswith(q.name) and hit["score"] > 1 - 1e-4  # same (masked) descriptor
    bad = save_concepts(tmp_path / "bad.pt", H, "0123456789abcdef", "layer4", object_factors=[0])
    index_main = _tool_main("index")
    with pytest.raises(SystemExit) as ex:  # what the tool does when run: one line, exit code 2
        main_wrapper(lambda _: index_main(["--images", str(imgs), "--config", str(tiny_config),
                                            "--out", str(tmp_path / "ix2"), "--concepts", str(bad)]))
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "another backbone" in err[0]
