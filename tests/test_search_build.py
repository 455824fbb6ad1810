"""retrieval.search.build: an index built from descriptor shards, in memory or with its inverted lists
on disk, answers as brute force does; the search setting it stores is the cheapest on the ladder
reaching the target recall (on held-out rows, against a loop; on fresh queries); the build imports
no torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import fake_shards, unit_rows

from retrieval.core.errors import ConfigError
from retrieval.search.build import TUNE_QUERIES, build_index_from_shards
from retrieval.search.factory import make_faiss_index, n_lists
from retrieval.search.index import ImageIndex
from retrieval.search.index_config import IndexConfig
from retrieval.search.tuning import EF_LADDER, knn_recall, nprobe_ladder

REPO = Path(__file__).resolve().parents[1]


def mixture(n: int, seed: int, d: int = 32, centres: int = 200, noise: float = 2.0) -> np.ndarray:
    """(n, d) float32 unit rows: a random one of ``centres`` fixed unit centres plus Gaussian noise
    (loose clusters: recall climbs over several steps of each ladder)."""
    C = unit_rows(centres, d, 99)
    rng = np.random.default_rng(seed)
    X = C[rng.integers(0, centres, n)] + noise * rng.normal(size=(n, d)) / np.sqrt(d)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def exact_top(Q: np.ndarray, X: np.ndarray, k: int = 10) -> np.ndarray:
    return np.argsort(-(Q @ X.T), axis=1, kind="stable")[:, :k]


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
def test_stored_nprobe_is_the_first_on_the_ladder_reaching_the_target_on_fresh_queries(tmp_path):
    """IVF: tuned on a sample of the rows (their own ids out); on 1000 fresh draws of the same
    mixture, the stored nprobe reaches the target and the one before it does not."""
    X, Q = mixture(6000, 0), mixture(1000, 1)
    fake_shards(tmp_path / "desc", X, 2000)
    rep = build_index_from_shards(tmp_path / "desc", tmp_path / "ix", factory="IVF32,Flat", progress=False,
                                  target_recall=0.85)
    t = rep.tuning
    assert t is not None and t.knob == "nprobe" and t.reached and t.recall >= 0.85 and t.target == 0.85
    assert t.queries == 600 and not t.rerank and t.seconds <= rep.seconds  # counted in the build's time
    index = ImageIndex.load(tmp_path / "ix")
    assert index.config.nprobe == t.value and index.nprobe == t.value and index.config.rerank is False
    truth = exact_top(Q, X)
    fresh = {v: knn_recall(index.search(Q, 10, nprobe=v)[1], truth, 10) for v in nprobe_ladder(32)}
    first = next(v for v in nprobe_ladder(32) if fresh[v] >= 0.85)
    assert t.value == first, (t, fresh)
    assert knn_recall(index.search(Q, 10)[1], truth, 10) == fresh[t.value]  # stored = what search uses
    assert [v for v, _ in t.ladder] == [v for v in nprobe_ladder(32) if v <= t.value]  # stopped there


@pytest.mark.slow
def test_stored_ef_search_is_the_first_reaching_the_target_on_rows_held_out_of_the_graph(tmp_path):
    """HNSW: the last rows are held out of the graph while it is tuned, then added. A loop over the
    ladder on a graph built the same way (one faiss thread: the graph is deterministic) finds the
    same recalls and the same first value; fresh queries reach the target too (± the sampling
    error of 1000 queries)."""
    X, Q = mixture(6000, 0), mixture(1000, 1)
    fake_shards(tmp_path / "desc", X, 2000)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        rep = build_index_from_shards(tmp_path / "desc", tmp_path / "ix", factory="HNSW8", progress=False,
                                      target_recall=0.95)
        n = min(TUNE_QUERIES, len(X) // 10)
        ref = make_faiss_index("HNSW8", X.shape[1])
        for a in range(0, len(X) - n, 2000):  # shard by shard, as the build adds them
            ref.add(X[a:min(a + 2000, len(X) - n)])
        held, truth = X[len(X) - n:], exact_top(X[len(X) - n:], X[:len(X) - n])
        loop = []
        for ef in EF_LADDER:
            faiss.downcast_index(ref).hnsw.efSearch = ef
            loop.append((ef, knn_recall(ref.search(held, 10)[1], truth, 10)))
            if loop[-1][1] >= 0.95:
                break
    finally:
        faiss.omp_set_num_threads(threads)
    t = rep.tuning
    assert t is not None and t.knob == "ef_search" and t.reached and t.queries == n
    assert t.value == loop[-1][0] and len(loop) > 3  # the ladder was climbed, not its first step taken
    np.testing.assert_allclose([r for _, r in t.ladder], [r for _, r in loop])
    assert [v for v, _ in t.ladder] == [v for v, _ in loop]
    index = ImageIndex.load(tmp_path / "ix")
    assert index.ntotal == len(X) and index.config.ef_search == t.value  # the held-out rows were added
    np.testing.assert_array_equal(index.search(X[-3:], 1)[1][:, 0], np.arange(len(X) - 3, len(X)))
    fresh = knn_recall(index.search(Q, 10)[1], exact_top(Q, X), 10)
    assert fresh >= 0.95 - 0.015, fresh


@pytest.mark.slow
def test_no_tuning_when_the_target_is_0_or_the_setting_is_given_and_a_bad_target_is_refused(tmp_path):
    X = mixture(3000, 0)
    fake_shards(tmp_path / "desc", X, 1500)
    off = build_index_from_shards(tmp_path / "desc", tmp_path / "off", factory="IVF16,Flat", progress=False,
                                  target_recall=0)
    fixed = int(round(np.sqrt(n_lists(len(X)))))  # the untuned default
    assert off.tuning is None and ImageIndex.load(tmp_path / "off").config.nprobe == fixed
    given = build_index_from_shards(tmp_path / "desc", tmp_path / "given", factory="IVF16,Flat", progress=False,
                                    index_config=IndexConfig(nprobe=3))
    assert given.tuning is None and ImageIndex.load(tmp_path / "given").config.nprobe == 3
    tuned = build_index_from_shards(tmp_path / "desc", tmp_path / "tuned", factory="IVF16,Flat", progress=False)
    assert tuned.tuning is not None and tuned.tuning.target == 0.98  # the default
    assert tuned.as_dict()["tuning"]["value"] == tuned.tuning.value  # what --json prints
    with pytest.raises(ConfigError, match="target recall 1.5"):
        build_index_from_shards(tmp_path / "desc", tmp_path / "bad", factory="IVF16,Flat", progress=False,
                                target_recall=1.5)


@pytest.mark.slow
def test_a_build_from_shards_imports_no_torch(tmp_path):
    """What ``gemseg index --descriptors`` runs (the command, its job and the build) loads neither
    torch nor torchvision, nor the jobs module that imports every model."""
    fake_shards(tmp_path / "desc", unit_rows(2000, 16), 1000)
    code = ("import sys; from retrieval.commands.main import run_command\n"
            f"assert run_command('index', ['--descriptors', {str(tmp_path / 'desc')!r}, '--out', "
            f"{str(tmp_path / 'ix')!r}, '--factory', 'HNSW32', '--quiet']) == 0\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'cv2', 'retrieval.jobs') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert ImageIndex.load(tmp_path / "ix").ntotal == 2000
