"""Past one machine: sharded, resumable extraction (1 process, torchrun), indexes built from shards
(in memory and on disk), indexes that grow by appending, and files that change or vanish."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, random_images

from retrieval.core.image_listing import list_images
from retrieval.search.build import build_index_from_shards
from retrieval.search.factory import auto_factory, n_lists
from retrieval.search.index import ImageIndex
from retrieval.search.sharded_extract import STOP_AFTER_ENV
from retrieval.search.shards import ShardDir


def unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def shards_of(folder: Path):
    """(paths, descriptors) of a descriptor folder, in shard order."""
    sd = ShardDir(folder)
    shards = list(sd.iter_shards())
    return [p for s in shards for p in s.paths], np.concatenate([np.asarray(s.descriptors) for s in shards])


def fake_shards(folder: Path, X: np.ndarray, shard_size: int) -> ShardDir:
    """A descriptor folder holding ``X`` as if extracted (paths /img/<i>.jpg)."""
    sd = ShardDir(folder)
    sd.open_for({"backbone": "x"}, "fp", X.shape[1], shard_size, "generated")
    for k, a in enumerate(range(0, len(X), shard_size)):
        b = min(len(X), a + shard_size)
        sd.write_shard(k, X[a:b], [f"/img/{i}.jpg" for i in range(a, b)], np.zeros((b - a, 2), np.int64), [])
    sd.write_manifest(dict(sd.manifest(), images=len(X), shards=k + 1))
    return sd


def torchrun(*args, n=2, env_extra=None, timeout=240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), GEMSEG_THREADS="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    random_images(d / "a", 4, size=(40, 56))
    random_images(d / "b", 3, size=(56, 40), seed=1)
    (d / "b" / "broken.jpg").write_bytes(b"not an image")
    return d


# -- the pieces ----------------------------------------------------------------------------------


def test_auto_factory_follows_size_and_budget():
    assert auto_factory(5_000, 128, "4G") == "Flat"
    assert auto_factory(200_000, 128, "4G") == "HNSW32"
    assert auto_factory(200_000, 128, "4G", on_disk=True) == f"IVF{n_lists(200_000)},Flat"
    assert auto_factory(10_000_000, 128, "4G").startswith("OPQ64,IVF65536_HNSW32,PQ64")  # 5 GB raw > 4G
    assert n_lists(1_000_000) == 4096 and n_lists(10_000_000) == 65536


# -- sharded extraction --------------------------------------------------------------------------
@pytest.mark.slow
def test_extract_lists_skipped_files_resumes_and_refuses_another_model(photos, tmp_path, tiny_config, run_tool):
    one = tmp_path / "one"
    proc = run_tool("extract", "--images", photos, "--out", one, "--config", tiny_config, "--shard-size", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["listed"] == 8 and rep["shards"] == 3 and rep["shards_written"] == 3 and rep["complete"]
    assert rep["images"] == 7 and rep["skipped_files"] == 1
    paths, X = shards_of(one)
    assert paths == [str(p) for p in list_images(photos) if p.name != "broken.jpg"] and X.shape[0] == 7
    skipped = json.loads((one / "shards" / "000001" / "skipped.json").read_text())  # a/ 4 images, then b/broken
    assert [Path(s["path"]).name for s in skipped] == ["broken.jpg"]

    # a re-run recomputes nothing; another model is refused
    proc = run_tool("extract", "--images", photos, "--out", one, "--config", tiny_config, "--shard-size", "3", "--json")
    assert json.loads(proc.stdout)["shards_written"] == 0 and json.loads(proc.stdout)["shards_skipped"] == 3
    other = tmp_path / "other.yaml"
    other.write_text(tiny_config.read_text().replace("image_size: 64", "image_size: 48"))
    assert_one_line_error(run_tool("extract", "--images", photos, "--out", one, "--config", other), "another model")
    assert_one_line_error(run_tool("extract", "--images", photos, "--out", one, "--config", tiny_config,
                                   "--shard-size", "4"), "shard-size 3")


@pytest.mark.slow
def test_two_ranks_under_torchrun_equal_one_process_and_a_killed_run_resumes(photos, tmp_path, tiny_config, run_tool):
    one = tmp_path / "one"
    assert run_tool("extract", "--images", photos, "--out", one, "--config", tiny_config, "--shard-size", "2",
                    "--quiet").returncode == 0
    ref_paths, ref_X = shards_of(one)

    # two ranks; each rank is killed after its first shard
    two = tmp_path / "two"
    args = ["tools/extract.py", "--images", photos, "--out", two, "--config", tiny_config, "--shard-size", "2", "--json"]
    proc = torchrun(*args, env_extra={STOP_AFTER_ENV: "1"})
    assert proc.returncode != 0
    done = sorted(p.name for p in (two / "shards").iterdir() if not p.name.startswith("."))
    # each rank stops after its first shard (rank 0: shard 0, rank 1: shard 1); when one rank stops
    # first, torchrun may end the other before its shard is complete, so one or both are there
    assert done and set(done) <= {"000000", "000001"}, done
    mtimes = {k: (two / "shards" / k / "descriptors.npy").stat().st_mtime_ns for k in done}

    proc = torchrun(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = [json.loads(x) for x in proc.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert sum(r["shards_skipped"] for r in reports) == len(done)
    assert sum(r["shards_written"] for r in reports) == 4 - len(done)
    assert {k: (two / "shards" / k / "descriptors.npy").stat().st_mtime_ns for k in done} == mtimes  # not redone
    paths, X = shards_of(two)
    assert paths == ref_paths
    np.testing.assert_allclose(X, ref_X, atol=1e-5)


# -- indexes from shards -------------------------------------------------------------------------
def test_on_disk_index_returns_the_in_memory_top_k_and_moves_with_its_folder(tmp_path):
    X, Q = unit_rows(3000, 16), unit_rows(20, 16, 1)
    fake_shards(tmp_path / "desc", X, 700)
    mem = build_index_from_shards(tmp_path / "desc", tmp_path / "mem", factory="IVF16,Flat", progress=False)
    disk = build_index_from_shards(tmp_path / "desc", tmp_path / "disk", factory="IVF16,Flat", on_disk=True,
                                   progress=False)
    assert mem.factory == disk.factory == "IVF16,Flat" and disk.on_disk
    assert list((tmp_path / "disk" / "segments").glob("*.ivfdata"))
    os.rename(tmp_path / "disk", tmp_path / "moved")  # the lists file is found beside its index
    a, b = ImageIndex.load(tmp_path / "mem"), ImageIndex.load(tmp_path / "moved")
    for kw in ({"rerank": False}, {}):
        sa, ia = a.search(Q, 10, **kw)
        sb, ib = b.search(Q, 10, **kw)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(sa, sb, rtol=1e-6)
    ref = np.argsort(-(Q @ X.T), 1)[:, :10]
    _, ib = b.search(Q, 10, nprobe=16)  # every list visited + exact re-ranking = exact search
    np.testing.assert_array_equal(ib, ref)
    assert b.paths[int(ib[0, 0])] == f"/img/{ref[0, 0]}.jpg"


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


# -- growing an index ----------------------------------------------------------------------------
def _files(folder: Path):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_adding_writes_only_what_is_new(tmp_path, factory):
    X = unit_rows(400, 8)
    idx = ImageIndex(8, factory, fingerprint="fp")
    idx.add(X[:300], [f"/p/{i}" for i in range(300)])
    idx.save(tmp_path / "ix")
    before = _files(tmp_path / "ix")
    head = (tmp_path / "ix" / "descriptors.npy").read_bytes()[128:]
    back = ImageIndex.load(tmp_path / "ix")
    back.add(X[300:], [f"/p/{i}" for i in range(300, 400)])
    back.save(tmp_path / "ix")
    after = _files(tmp_path / "ix")
    grown = {"descriptors.npy", "paths.sqlite", "meta.json"}
    for name, (size, mtime, ino) in before.items():
        if name not in grown:
            assert after[name] == (size, mtime, ino), name  # segments, trained index: untouched
    assert after["descriptors.npy"][2] == before["descriptors.npy"][2]  # the same file, appended to
    assert (tmp_path / "ix" / "descriptors.npy").read_bytes()[128:128 + len(head)] == head
    assert after["descriptors.npy"][0] - before["descriptors.npy"][0] == 100 * 8 * 4
    new_files = set(after) - set(before)
    assert new_files == (set() if factory == "Flat" else {"segments/000000000300.index"})
    final = ImageIndex.load(tmp_path / "ix")
    assert len(final) == 400 and final.paths[350] == "/p/350" and final.paths == [f"/p/{i}" for i in range(400)]
    np.testing.assert_array_equal(final.descriptors(), X)
    _, ids = final.search(X[[5, 305]], 1, nprobe=4)
    assert ids[:, 0].tolist() == [5, 305]


def test_interrupted_addition_leaves_the_index_as_it_was(tmp_path, monkeypatch):
    import retrieval.search.index as index_mod

    X = unit_rows(60, 8)
    idx = ImageIndex(8, "Flat", fingerprint="fp")
    idx.add(X[:40], [f"/p/{i}" for i in range(40)])
    idx.save(tmp_path / "ix")
    back = ImageIndex.load(tmp_path / "ix")
    back.add(X[40:], [f"/p/{i}" for i in range(40, 60)])

    def die(*a, **k):
        raise KeyboardInterrupt  # after the descriptors were appended, before the store committed

    monkeypatch.setattr(index_mod.PathStore, "commit", die)
    with pytest.raises(KeyboardInterrupt):
        back.save(tmp_path / "ix")
    monkeypatch.undo()
    again = ImageIndex.load(tmp_path / "ix")
    assert len(again) == 40 and again.descriptors().shape == (40, 8)
    again.add(X[40:50], [f"/p/{i}" for i in range(40, 50)])  # the dangling rows are replaced
    again.save(tmp_path / "ix")
    np.testing.assert_array_equal(ImageIndex.load(tmp_path / "ix").descriptors(), X[:50])


def test_version_1_index_folder_is_read_and_upgraded(tmp_path):
    import faiss

    X = unit_rows(20, 8)
    old = tmp_path / "old"
    old.mkdir()
    np.save(old / "descriptors.npy", X)
    (old / "paths.json").write_text(json.dumps([f"/p/{i}" for i in range(20)]))
    fi = faiss.IndexHNSWFlat(8, 8, faiss.METRIC_INNER_PRODUCT)
    fi.add(X)
    faiss.write_index(fi, str(old / "faiss.index"))
    (old / "meta.json").write_text(json.dumps({"format": "gemseg-index", "version": 1, "factory": "HNSW8",
                                               "dim": 8, "count": 20, "fingerprint": "fp", "model": {}}))
    idx = ImageIndex.load(old)
    assert idx.paths[3] == "/p/3" and idx.search(X[3], 1)[1][0, 0] == 3
    idx.add(unit_rows(2, 8, 5), ["/p/new0", "/p/new1"])
    idx.save(old)
    assert not (old / "paths.json").exists() and (old / "paths.sqlite").is_file()
    back = ImageIndex.load(old)
    assert len(back) == 22 and back.paths[21] == "/p/new1" and back.search(X[7], 1)[1][0, 0] == 7


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
