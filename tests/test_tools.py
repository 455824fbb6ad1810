"""tools/index.py and tools/search.py as a user runs them: odd images, bad input, --json."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, random_images
from PIL import Image


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    """Every image mode a user may have, plus three files that are not usable images."""
    d = tmp_path_factory.mktemp("odd")
    random_images(d / "plain", 3, size=(40, 56))
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((rng.random((40, 56)) * 65535).astype(np.uint16)).save(d / "sixteen.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "alpha.png")
    rgb.convert("L").save(d / "gray.png")
    rgb.convert("P", palette=Image.ADAPTIVE).save(d / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(d / "rotated.jpg", exif=exif)
    rgb.transpose(Image.Transpose.ROTATE_270).save(d / "upright.png")  # what rotated.png shows
    rgb.save(d / "rotated.png", exif=exif)
    buf = (d / "plain" / "img000.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(buf[: len(buf) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("this is not an image\n")
    return d


def test_index_skips_bad_files_and_search_finds_itself(odd_folder, tmp_path, tiny_config, run_tool):
    out = tmp_path / "ix"
    proc = run_tool("index", "--images", odd_folder, "--config", tiny_config, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["added"] == 11 and rep["skipped"] == 3 and rep["total"] == 11
    assert {Path(f["path"]).name for f in rep["failures"]} == {"truncated.jpg", "empty.jpg", "notes.jpg"}
    assert (rep["image_size"], rep["scales"], rep["whitening"]) == (64, [1.0], "none")  # the config's model

    # a second run adds nothing and keeps the index; a new image is added
    shutil.copy(odd_folder / "plain" / "img001.jpg", tmp_path / "extra.jpg")
    proc = run_tool("index", "--images", tmp_path / "extra.jpg", "--config", tiny_config, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"] == 12

    # the EXIF-rotated file is described as the upright image it shows
    proc = run_tool("search", "--query", odd_folder / "upright.png", "--index", out, "--top", "2", "--json")
    hits = json.loads(proc.stdout)["results"][0]["hits"]
    assert {Path(h["path"]).name for h in hits} == {"upright.png", "rotated.png"}
    assert min(h["score"] for h in hits) > 1 - 1e-5

    q = odd_folder / "cmyk.jpg"
    html = tmp_path / "hits.html"
    proc = run_tool("search", "--query", q, "--index", out, "--top", "3", "--json", "--html", html,
                    "--png", tmp_path / "hits.png")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["results"][0]
    assert res["query"] == str(q) and [h["rank"] for h in res["hits"]] == [1, 2, 3]
    assert Path(res["hits"][0]["path"]).name == "cmyk.jpg" and res["hits"][0]["score"] > 0.999
    assert html.read_text().count("<img") == 4 and Image.open(tmp_path / "hits.png").width > 100

    # a bad query image: one line, exit 2
    assert_one_line_error(run_tool("search", "--query", odd_folder / "truncated.jpg", "--index", out),
                          "truncated.jpg")
    # an index built by another model refuses to be extended by this one; nothing is lost
    other = tmp_path / "other.yaml"
    other.write_text(tiny_config.read_text().replace("image_size: 64", "image_size: 48"))
    before = (out / "paths.sqlite").read_bytes()
    assert_one_line_error(run_tool("index", "--images", odd_folder, "--config", other, "--out", out),
                          "another model")
    assert (out / "paths.sqlite").read_bytes() == before


@pytest.mark.parametrize("case", ["empty_folder", "missing", "typo", "not_index"])
def test_bad_input_is_one_line_exit_2(case, tmp_path, tiny_config, run_tool):
    if case == "empty_folder":
        (tmp_path / "empty").mkdir()
        proc = run_tool("index", "--images", tmp_path / "empty", "--config", tiny_config, "--out", tmp_path / "ix")
        assert_one_line_error(proc, "no images")
    elif case == "missing":
        proc = run_tool("search", "--query", tmp_path / "nope.jpg", "--index", tmp_path / "noindex")
        assert_one_line_error(proc, "not found")
    elif case == "typo":
        bad = tmp_path / "bad.yaml"
        bad.write_text("model:\n  backbone: resnet18\n  pooling: gem\n  scale: [1.0]\n")
        proc = run_tool("index", "--images", tmp_path, "--config", bad)
        assert_one_line_error(proc, "scale", "scales")
    else:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "keep.txt").write_text("mine")
        random_images(tmp_path / "imgs", 2)
        proc = run_tool("index", "--images", tmp_path / "imgs", "--config", tiny_config, "--out", tmp_path / "data")
        assert_one_line_error(proc, "not a gemseg index")
        assert (tmp_path / "data" / "keep.txt").read_text() == "mine"
