"""tools/coseg.py as a subprocess: outputs, scores, JSON, concept files, mixed image modes, errors."""
import importlib.util
import json

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, run_tool
from PIL import Image

from retrieval.core.errors import DataError, ModelMismatchError


def _tool_main():
    """tools/coseg.py's main(), imported in-process (for error paths that need no subprocess)."""
    spec = importlib.util.spec_from_file_location("coseg_tool", REPO / "tools" / "coseg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from retrieval.toy.collection import make_coseg_sets
    root = tmp_path_factory.mktemp("coseg")
    make_coseg_sets(root, n_sets=1, images_per_set=4, image_size=64, n_parts=2, seed=2)
    return root


def test_empty_folder_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    p = run_tool("coseg", "--images", tmp_path / "empty", "--out", tmp_path / "o")
    assert_one_line_error(p, "no images")


def test_run_writes_everything_and_scores(toy, tmp_path):
    out = tmp_path / "out"
    p = run_tool("coseg", "--images", toy / "images", "--k", "2", "--masks", toy / "masks", "--parts",
                 "--part-masks", toy / "parts", "--image-size", "160", "--out", out, "--json",
                 "--save-concepts", tmp_path / "concepts.pt")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    (s,) = doc["sets"]
    assert s["images"] == 4 and 0.0 <= s["jaccard"] <= 1.0 and "corloc" in s and "part_miou" in s
    assert set(doc["timings"]) >= {"loading", "backbone", "factorisation"}
    assert doc["layer"] == "block14" and doc["k"] == 2
    stems = sorted(pp.stem for pp in (toy / "images" / "set00").iterdir())
    for stem in stems:
        m = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        assert m.shape == (64, 64) and set(np.unique(m)) <= {0, 255}
        lab = np.asarray(Image.open(out / "parts" / f"{stem}.png"))
        assert lab.shape == (64, 64) and lab.max() <= 2
        assert (out / "overlays" / f"{stem}.jpg").is_file()
        assert (m > 0).sum() == (lab > 0).sum()
    boxes = json.loads((out / "boxes.json").read_text())["images"]
    assert sorted(boxes) == stems
    html = (out / "index.html").read_text()
    assert all(f"masks/{s}.png" in html for s in stems)
    assert doc["boxes"][stems[0]] == boxes[stems[0]]["box"]
    assert (tmp_path / "concepts.pt").is_file()

    # mixed sizes, grayscale and CMYK, projected on the saved concepts (k comes from the file)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    src = Image.open(sorted((toy / "images" / "set00").iterdir())[0])
    src.convert("L").save(mixed / "gray.png")
    src.resize((80, 48)).convert("CMYK").save(mixed / "cmyk.jpg")
    src.resize((40, 72)).save(mixed / "tall.jpg")
    p2 = run_tool("coseg", "--images", mixed, "--concepts", tmp_path / "concepts.pt", "--out", tmp_path / "o2")
    assert p2.returncode == 0, p2.stderr
    assert np.asarray(Image.open(tmp_path / "o2" / "masks" / "cmyk.png")).shape == (48, 80)
    assert np.asarray(Image.open(tmp_path / "o2" / "masks" / "tall.png")).shape == (72, 40)

    # concepts made by another backbone: a ModelMismatchError (one line, exit 2 from the tool)
    cfg = tmp_path / "r18.yaml"
    cfg.write_text("model:\n  backbone: resnet18\n  weights: none\n")
    with pytest.raises(ModelMismatchError, match="another backbone"):
        _tool_main()(["--images", str(mixed), "--config", str(cfg), "--concepts", str(tmp_path / "concepts.pt"),
                      "--out", str(tmp_path / "o3")])


def test_k_too_large_is_a_data_error(toy, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    Image.open(sorted((toy / "images" / "set00").iterdir())[0]).save(one / "a.png")
    cfg = tmp_path / "r18.yaml"
    cfg.write_text("model:\n  backbone: resnet18\n  weights: none\n")
    with pytest.raises(DataError, match="larger than the data allows") as e:
        _tool_main()(["--images", str(one), "--k", "500", "--image-size", "64", "--config", str(cfg),
                      "--out", str(tmp_path / "o")])
    assert "\n" not in str(e.value)
