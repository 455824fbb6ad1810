"""A new user's day: gemseg's tools run on the kind of folder a user has, as the user sees them.

* no GPU: every tool with ``--device cuda`` says so in one line and creates nothing;
* a folder with files that are not images (or not supported without an extra): indexed, with each
  file left out listed and why;
* a hit page at ``--top 50``, laid out in a real browser (chromium): it wraps, with working links;
* a folder of classes with a one-image class, a stray top-level file and a text file: the
  evaluation explains its columns and lists what is not a query.

What each module does on its own is tested in the module's file (``test_<module>.py``); the
command-line tools end to end in ``test_tools_<tool>.py``.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line_error, fifty_hits, random_images, run_tool

import retrieval.core.images as images_mod
from retrieval.evaluation.datasets import load_class_folders
from retrieval.search.hit_pages import write_hits_html


@pytest.mark.slow
def test_every_tool_says_no_cuda_in_one_line_and_creates_nothing(no_cuda, tmp_path, tiny_index):
    ix, photos, cfg = tiny_index
    (tmp_path / "classes" / "a").mkdir(parents=True)
    random_images(tmp_path / "classes" / "a", 2)
    random_images(tmp_path / "classes" / "b", 2, seed=1)
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text(cfg.read_text() + f"train:\n  data: {tmp_path / 'classes'}\n  epochs: 1\n")
    runs = {
        "index": ("--images", photos, "--config", cfg, "--out", tmp_path / "new_index"),
        "search": ("--query", photos / "img000.jpg", "--index", ix),
        "evaluate": ("--dataset", f"folder:{tmp_path / 'classes'}", "--config", cfg),
        "coseg": ("--images", photos, "--out", tmp_path / "coseg_out"),
        "train_gem": ("--config", train_cfg, "--out", tmp_path / "run"),
        "demo": ("--out", tmp_path / "demo_out", "--source", "synthetic"),
    }
    for tool, args in runs.items():
        proc = run_tool(tool, *args, "--device", "cuda")
        assert_one_line_error(proc, "no CUDA device", "use --device cpu")
    for made in ("new_index", "coseg_out", "run", "demo_out"):
        assert not (tmp_path / made).exists(), made


@pytest.mark.slow
def test_unsupported_files_are_listed_with_the_reason(tmp_path, tiny_index, monkeypatch):
    _, _, cfg = tiny_index
    monkeypatch.setattr(images_mod, "IMAGE_EXTENSIONS",  # as without the heif extra
                        tuple(e for e in images_mod.IMAGE_EXTENSIONS if e not in images_mod.HEIF_EXTENSIONS))
    random_images(tmp_path / "photos", 2)
    (tmp_path / "photos" / "IMG_4032.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    (tmp_path / "photos" / "notes.txt").write_text("x")
    (tmp_path / "photos" / ".DS_Store").write_bytes(b"\x00")  # hidden: neither indexed nor listed
    proc = run_tool("index", "--images", tmp_path / "photos", "--config", cfg, "--out", tmp_path / "ix", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    why = {Path(f["path"]).name: f["reason"] for f in rep["failures"]}
    assert rep["added"] == 2 and set(why) == {"IMG_4032.HEIC", "notes.txt"}
    assert why["IMG_4032.HEIC"].startswith("unsupported format .heic") and "gemseg[heif]" in why["IMG_4032.HEIC"]
    assert why["notes.txt"] == "unsupported format .txt"
    text = run_tool("index", "--images", tmp_path / "photos", "--config", cfg, "--out", tmp_path / "ix2")
    assert "skipped 2 files (not indexed):" in text.stdout and "IMG_4032.HEIC: unsupported format .heic" in text.stdout


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_hit_html_links_names_and_wraps(tmp_path):
    results = fifty_hits(tmp_path)
    page = write_hits_html(tmp_path / "pages" / "hits.html", results)
    doc = page.read_text()
    links = re.findall(r"<a href='([^']+)'", doc)
    assert len(links) == 51 and links[1] == "../photos/img000.jpg"  # relative to the page
    assert all((page.parent / h).resolve() == Path(r["path"]).resolve() for h, r in zip(links[1:], results[0]["hits"]))
    assert doc.count("img011.jpg</figcaption>") == 4 and "file not found" in doc
    if CHROMIUM is None:
        pytest.skip("no chromium to lay the page out")
    probe = tmp_path / "pages" / "probe.html"  # the page plus a script that reports its layout
    probe.write_text(doc + "<script>const f=[...document.querySelectorAll('figure')];document.title="
                     "JSON.stringify({rows:new Set(f.map(e=>e.offsetTop)).size,right:Math.max(...f.map("
                     "e=>e.getBoundingClientRect().right)),width:window.innerWidth})</script>")
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    layout = json.loads(re.search(r"<title>(\{.*?\})</title>", out).group(1).replace("&quot;", '"'))
    assert layout["rows"] >= 5 and layout["right"] <= layout["width"]  # wrapped, no sideways scroll


@pytest.mark.slow
def test_folder_evaluation_explains_itself(tmp_path, tiny_index):
    _, _, cfg = tiny_index
    root = tmp_path / "classes"
    random_images(root / "a", 3)
    random_images(root / "b", 2, seed=1)
    random_images(root / "single", 1, seed=2)
    shutil.copy(root / "a" / "img000.jpg", root / "stray.jpg")
    (root / "a" / "notes.txt").write_text("x")
    ds = load_class_folders(root)
    assert ds.n_queries == 5 and ds.n_db == 7  # the one-image class and the stray file: database only
    why = {Path(d["path"]).name: d["why"] for d in ds.info["left_out"]}
    assert set(why) == {"img000.jpg", "stray.jpg", "notes.txt"}
    assert "one image" in why["img000.jpg"] and "top-level" in why["stray.jpg"] and "unsupported" in why["notes.txt"]
    proc = run_tool("evaluate", "--dataset", f"folder:{root}", "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    assert "Medium = Easy" in proc.stdout and "no Hard set" in proc.stdout
    assert "not queries (3):" in proc.stdout and "stray.jpg" in proc.stdout
    rep = json.loads(run_tool("evaluate", "--dataset", f"folder:{root}", "--config", cfg, "--json").stdout)
    assert rep["n_queries"] == 5 and len(rep["left_out"]) == 3 and rep["notes"]


