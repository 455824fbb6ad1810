"""tools/index.py as a user runs it: odd images, bad input, --json; concepts, compaction, indexes built
from descriptor shards (also by two ranks under torchrun), changed and vanished files, a compressed
factory refused before any image is described, an interrupted first index resumed (a real subprocess
interrupted or killed), vanished files counted at index time."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO,
    _tool_module,
    assert_one_line_error,
    fake_shards,
    grown_index,
    random_images,
    run_tool,
    torchrun,
    unit_rows,
)
from PIL import Image

import retrieval.search.collection as collection_mod
from cosegment.concept_file import save_concepts
from retrieval.core.cli import main_wrapper
from retrieval.search.build import build_index_from_shards
from retrieval.search.index import ImageIndex, IndexConfig
from retrieval.search.resumable_extract import FIRST_CHUNK, PAUSE_AFTER_ENV, work_dir

D = 16


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


@pytest.mark.slow
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


def _tool_main(name: str):
    """``tools/<name>.py``'s ``main(argv)`` (what it returns, not run through ``main_wrapper``)."""
    return _tool_module(name).main


@pytest.mark.slow
def test_tools_index_and_search_with_concepts(small_net, tmp_path, tiny_config, capsys):
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


def test_index_tool_compacts(tmp_path, run_tool):
    grown_index(tmp_path / "ix", "IVF4,Flat", unit_rows(400, D), np.arange(10))
    proc = run_tool("index", "--compact", "--out", tmp_path / "ix", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert (rep["before"], rep["removed"], rep["live"], rep["segments_before"]) == (400, 10, 390, 3)
    proc = run_tool("index", "--compact", "--out", tmp_path / "ix")
    assert proc.returncode == 0 and "400" not in proc.stdout and "390 ids → 390 (0 removed)" in proc.stdout
    assert ImageIndex.load(tmp_path / "ix").paths[0] == "/p/10.jpg"
    assert_one_line_error(run_tool("index", "--compact", "--out", tmp_path / "nothing"), "not found")
    proc = run_tool("index", "--compact", "--images", tmp_path, "--out", tmp_path / "ix")  # argparse's usage
    assert proc.returncode == 2 and "--images: not allowed with argument --compact" in proc.stderr


@pytest.mark.slow
def test_index_tool_builds_from_descriptors_and_search_uses_it(photos, tmp_path, tiny_config, run_tool):
    desc = tmp_path / "desc"
    assert run_tool("extract", "--images", photos, "--out", desc, "--config", tiny_config, "--shard-size", "3",
                    "--quiet").returncode == 0
    out = tmp_path / "ix"
    proc = run_tool("index", "--descriptors", desc, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["factory"] == "Flat" and rep["count"] == 7
    q = photos / "b" / "img001.jpg"
    proc = run_tool("search", "--query", q, "--index", out, "--top", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["hits"][0]["path"] == str(q)
    assert_one_line_error(run_tool("index", "--descriptors", desc, "--out", tmp_path / "ix2", "--factory", "HNSW32",
                                   "--on-disk"), "ivf")
    (desc / "shards" / "000001" / "skipped.json").unlink()  # an unfinished extraction
    assert_one_line_error(run_tool("index", "--descriptors", desc, "--out", tmp_path / "ix3"), "1 of 3 shards missing")


@pytest.mark.slow
def test_index_tool_tunes_a_build_from_descriptors_for_target_recall(tmp_path, tiny_config, run_tool):
    """--target-recall reaches the build by either job (shards alone; with --config, retrieval.jobs);
    the printed line and --json say what it reached; a bad value, or one without --descriptors,
    is argparse's usage line and exit 2."""
    fake_shards(tmp_path / "desc", unit_rows(2000, 16), 1000)
    proc = run_tool("index", "--descriptors", tmp_path / "desc", "--out", tmp_path / "a", "--factory", "IVF8,Flat",
                    "--target-recall", "0.9")
    assert proc.returncode == 0, proc.stderr
    assert "search setting: nprobe " in proc.stdout and "(target 0.9) on 200 held-out rows" in proc.stdout
    proc = run_tool("index", "--descriptors", tmp_path / "desc", "--out", tmp_path / "b", "--factory", "IVF8,Flat",
                    "--config", tiny_config, "--target-recall", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tuning"] is None
    for bad in (["--descriptors", tmp_path / "desc", "--target-recall", "1.5"],
                ["--images", tmp_path, "--target-recall", "0.9"]):
        proc = run_tool("index", *bad, "--out", tmp_path / "c")
        assert proc.returncode == 2 and "--target-recall" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_changed_file_is_described_again_and_prune_drops_vanished_ones(tmp_path, tiny_config, run_tool):
    src = tmp_path / "src"
    paths = random_images(src, 4)
    out = tmp_path / "ix"
    rep = json.loads(run_tool("index", "--images", src, "--config", tiny_config, "--out", out, "--json").stdout)
    assert rep["added"] == 4 and rep["total"] == 4

    # the content of img001 is replaced by another picture (img002's, re-encoded: another size)
    from PIL import Image
    Image.open(paths[2]).save(paths[1], quality=70)
    proc = run_tool("index", "--images", src, "--config", tiny_config, "--out", out, "--json")
    rep = json.loads(proc.stdout)
    assert rep["added"] == 0 and rep["updated"] == 1 and rep["already_indexed"] == 3 and rep["total"] == 4
    hits = json.loads(run_tool("search", "--query", paths[1], "--index", out, "--top", "4",
                               "--json").stdout)["results"][0]["hits"]
    assert [Path(h["path"]).name for h in hits].count("img001.jpg") == 1  # the old descriptor is gone
    assert {Path(h["path"]).name for h in hits[:2]} == {"img001.jpg", "img002.jpg"}  # same picture now
    assert hits[0]["score"] > 0.99

    # a deleted file is marked missing in the hits, and --prune drops it
    paths[3].unlink()
    proc = run_tool("search", "--query", paths[0], "--index", out, "--top", "4")
    assert "(file missing)" in proc.stdout and "--prune" in proc.stderr
    rep = json.loads(run_tool("index", "--images", src, "--config", tiny_config, "--out", out, "--prune",
                              "--json").stdout)
    assert rep["pruned"] == 1 and rep["total"] == 3 and rep["added"] == 0 and rep["updated"] == 0
    hits = json.loads(run_tool("search", "--query", paths[0], "--index", out, "--top", "4",
                               "--json").stdout)["results"][0]["hits"]
    assert len(hits) == 3 and not any(h.get("missing") for h in hits)


@pytest.mark.slow
def test_two_ranks_build_the_same_index_as_one(tmp_path):
    X, Q = unit_rows(2000, 16), unit_rows(10, 16, 1)
    fake_shards(tmp_path / "desc", X, 300)
    build_index_from_shards(tmp_path / "desc", tmp_path / "one", factory="IVF8,Flat", on_disk=True, progress=False)
    proc = torchrun("tools/index.py", "--descriptors", tmp_path / "desc", "--out", tmp_path / "two",
                    "--factory", "IVF8,Flat", "--on-disk", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(json.loads(x)["rank"] for x in proc.stdout.replace("}\n{", "}\x00{").split("\x00")) == [0, 1]
    assert not list(tmp_path.glob(".two.build*"))  # the work folder is gone
    a, b = ImageIndex.load(tmp_path / "one"), ImageIndex.load(tmp_path / "two")
    assert len(b) == 2000 and b.paths == a.paths
    for kw in ({"rerank": False}, {"nprobe": 8}):
        sa, ia = a.search(Q, 10, **kw)
        sb, ib = b.search(Q, 10, **kw)
        np.testing.assert_array_equal(ia, ib)


def test_ivfpq_on_a_small_collection_fails_before_extraction(tmp_path, tiny_index, monkeypatch):
    _, photos, cfg = tiny_index

    def never(*a, **k):
        raise AssertionError("images were described before the factory was checked")

    monkeypatch.setattr(collection_mod, "extract_resumably", never)
    proc = run_tool("index", "--images", photos, "--config", cfg, "--out", tmp_path / "ix", "--factory", "ivfpq")
    assert_one_line_error(proc, "needs at least 256 images", "this collection has 6", "--factory Flat")
    assert not (tmp_path / "ix").exists()


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, so Python turns it into
    KeyboardInterrupt as at a terminal (a suite started in the background by a shell without job
    control inherits SIGINT ignored, and an ignored SIGINT stays ignored in the child)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_an_interrupted_first_index_resumes(tmp_path, tiny_config, sig):
    """Ctrl-C (SIGINT) or a kill after the first chunk: no index folder, and the re-run describes
    only the rest. Before issue 27 the re-run described all 40 images again."""
    src, out = tmp_path / "src", tmp_path / "ix"
    random_images(src, FIRST_CHUNK + 8, size=(40, 48))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", GEMSEG_THREADS="2", PYTHONPATH=str(REPO),
               **{PAUSE_AFTER_ENV: "1"})
    # stderr to a file, not a pipe: waiting for the process, not for the end of its pipes, which a
    # decoding worker it forked may hold open for a moment after it is gone
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "index.py"), "--images", str(src), "--config",
                                 str(tiny_config), "--out", str(out), "--quiet"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=err_out, text=True, preexec_fn=_default_sigint)
    try:
        assert proc.stdout.readline().strip() == "paused after 1 chunks"  # one chunk is on disk
        proc.send_signal(getattr(signal, sig))
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # say where it hangs: faulthandler dumps every thread on SIGABRT
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=30)
            pytest.fail(f"no exit 60 s after {sig}; its threads:\n{err_file.read_text()[-4000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
    err = err_file.read_text()
    assert proc.returncode == (130 if sig == "SIGINT" else -9), err
    assert not out.exists() and (work_dir(out) / "shards" / "000000").is_dir()
    again = run_tool("index", "--images", src, "--config", tiny_config, "--out", out)
    assert again.returncode == 0, again.stderr
    assert f"resumed an interrupted run: {FIRST_CHUNK} of the images were already described" in again.stdout
    rep = json.loads(run_tool("index", "--images", src, "--config", tiny_config, "--out", out, "--json").stdout)
    assert rep["total"] == FIRST_CHUNK + 8 and rep["already_indexed"] == FIRST_CHUNK + 8 and rep["resumed"] == 0
    assert not work_dir(out).exists()  # deleted once the index is written
    fresh = tmp_path / "fresh"
    assert run_tool("index", "--images", src, "--config", tiny_config, "--out", fresh, "--quiet").returncode == 0
    a, b = ImageIndex.load(out), ImageIndex.load(fresh)
    order = np.argsort(list(a.paths)), np.argsort(list(b.paths))
    assert sorted(a.paths) == sorted(b.paths)
    np.testing.assert_allclose(a.descriptors()[order[0]], b.descriptors()[order[1]], atol=1e-5)


@pytest.mark.slow
def test_index_counts_vanished_files_and_names_prune(tmp_path, tiny_config):
    """Before issue 27 a re-index said only "4 in index" after a file was renamed away."""
    src = tmp_path / "src"
    paths = random_images(src, 4)
    out = tmp_path / "ix"
    assert run_tool("index", "--images", src, "--config", tiny_config, "--out", out, "--quiet").returncode == 0
    paths[1].rename(tmp_path / "elsewhere.jpg")
    paths[2].unlink()
    proc = run_tool("index", "--images", src, "--config", tiny_config, "--out", out)
    assert proc.returncode == 0 and "warning: 2 indexed file(s) no longer exist" in proc.stderr and "--prune" in proc.stderr
    rep = json.loads(run_tool("index", "--images", src, "--config", tiny_config, "--out", out, "--json").stdout)
    assert rep["vanished"] == 2 and rep["pruned"] == 0
    rep = json.loads(run_tool("index", "--images", src, "--config", tiny_config, "--out", out, "--prune",
                              "--json").stdout)
    assert rep["pruned"] == 2 and rep["vanished"] == 0
    proc = run_tool("index", "--images", src, "--config", tiny_config, "--out", out)
    assert "no longer exist" not in proc.stderr
@pytest.mark.slow
def test_index_graph_flag_stores_the_knn_graph_and_keeps_it(tmp_path, tiny_config, run_tool):
    from retrieval.search.knn_graph import build_knn_graph

    random_images(tmp_path / "a", 6, size=(40, 56))
    random_images(tmp_path / "b", 3, size=(40, 56), seed=4)
    out = tmp_path / "ix"
    proc = run_tool("index", "--images", tmp_path / "a", "--config", tiny_config, "--out", out, "--graph", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    idx = ImageIndex.load(out)
    assert idx.has_stored_graph and idx.knn_graph().k == 3
    proc = run_tool("index", "--images", tmp_path / "b", "--config", tiny_config, "--out", out, "--quiet")  # grown
    assert proc.returncode == 0, proc.stderr
    idx = ImageIndex.load(out)
    assert idx.has_stored_graph
    want = build_knn_graph(idx.descriptors(), 3)
    np.testing.assert_array_equal(idx.knn_graph().ids, want.ids)
    assert_one_line_error(run_tool("index", "--images", tmp_path / "a", "--config", tiny_config, "--out", out,
                                   "--graph", "-1", "--quiet"), "graph")


def test_index_local_features_flag_stores_rootsift(tmp_path, tiny_config, run_tool):
    random_images(tmp_path / "a", 4, size=(64, 80))
    out = tmp_path / "ix"
    proc = run_tool("index", "--images", tmp_path / "a", "--config", tiny_config, "--out", out,
                    "--local-features", "30", "--quiet")
    assert proc.returncode == 0, proc.stderr
    idx = ImageIndex.load(out)
    assert idx.has_local_features and idx.local_features_end() == 4
    f = idx.stored_local_features(0, 30, 640)
    assert f is not None and len(f) <= 30 and f.size == (80, 64)
    assert_one_line_error(run_tool("index", "--images", tmp_path / "a", "--config", tiny_config, "--out", out,
                                   "--local-features", "-3", "--quiet"), "local-features")
@pytest.mark.slow
def test_index_with_a_cirtorch_checkpoint_gives_cirtorch_descriptors(tmp_path):
    """tools/index.py --model <cirtorch .pth> --image-size --scales: the index holds the descriptors
    of cirtorch's forward (tests/test_model_cirtorch.py's reference) on the images as gemseg
    resizes them; a search without the flags describes the query as the index was described."""
    import math

    import torch
    from test_model_cirtorch import (
        MEAN,
        STD,
        cirtorch_state,
        features_of,
        make_whiten,
        random_lw,
        reference,
        save_like_cirtorch,
    )

    feats, whiten, lw = features_of("resnet50", 0), make_whiten(2048, 3), random_lw(2048, 4)
    save_like_cirtorch(cirtorch_state("resnet50", feats, whiten, 3.0, lw), tmp_path / "r50.pth")
    paths = random_images(tmp_path / "images", 3, size=(60, 80), seed=4)
    scales = [1.0, 1 / math.sqrt(2)]
    done = run_tool("index", "--images", tmp_path / "images", "--out", tmp_path / "index", "--model",
                    tmp_path / "r50.pth", "--image-size", "72", "--scales", *map(str, scales), "--json")
    assert done.returncode == 0, done.stderr
    idx = ImageIndex.load(tmp_path / "index")
    assert idx.model_config["image_size"] == 72 and idx.model_config["scales"] == scales
    got = {p: idx.descriptors()[i] for i, p in enumerate(idx.paths.many(range(3)))}
    for p in paths:
        img = Image.open(p).convert("RGB").resize((72, 54), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
        x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        np.testing.assert_allclose(got[str(p.resolve())], reference(feats, whiten, 3.0, lw, x[None], scales)[0], atol=1e-4)
    res = run_tool("search", "--index", tmp_path / "index", "--query", paths[1], "--top", "1", "--json")
    hit = json.loads(res.stdout)["results"][0]["hits"][0]
    assert hit["path"] == str(paths[1].resolve()) and hit["score"] > 0.9999
    bad = run_tool("index", "--images", tmp_path / "images", "--out", tmp_path / "i2", "--model", tmp_path / "r50.pth",
                   "--scales", "1", "-0.5")
    assert_one_line_error(bad, "--scales")


@pytest.mark.slow
def test_factory_auto_with_images_is_chosen_from_the_collection_size(tmp_path, tiny_config, run_tool, small_net):
    """`--factory auto --images` used to fail ("invalid faiss factory string 'auto'"); now a small
    collection gets Flat, and the choice is stored (a second run keeps it). A new index for 5·10⁴
    images gets HNSW32 (what auto_factory says for that size), 10⁶ under a tiny budget IVF-PQ."""
    src = tmp_path / "src"
    random_images(src, 3)
    proc = run_tool("index", "--images", src, "--config", tiny_config, "--out", tmp_path / "ix", "--factory", "auto",
                    "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["factory"] == "Flat" and ImageIndex.load(tmp_path / "ix").factory == "Flat"
    big = collection_mod.open_or_create_index(small_net, tmp_path / "new", IndexConfig(factory="auto"), n_images=50_000)
    assert big.factory == "HNSW32"
    huge = collection_mod.open_or_create_index(small_net, tmp_path / "new", IndexConfig(factory="auto"), n_images=2_000_000,
                                memory_budget="64M")
    assert "PQ" in huge.factory and "IVF" in huge.factory
