"""retrieval.dedup.finder: tiers, groups, keepers and reasons on files whose descriptors are set
by hand (what a model would give is tested end to end in test_tools_dedup.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.dedup.finder import find_duplicates
from retrieval.dedup.thresholds import Thresholds
from retrieval.search.verify import Verification

T = Thresholds(near=0.9, similar=0.7, slack=0.05, min_inliers=10)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def collection(tmp_path):
    """a.png (+ byte copy a_copy.png, a half-size JPEG a_small.jpg), b.jpg and its burst shot b2.jpg
    (similar), c.jpg alone. Descriptors: a family at ≥ 0.95, b–b2 at 0.8, the rest unrelated."""
    rng = np.random.default_rng(0)
    def img(seed, size=(80, 60)):
        return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (6, 8, 3)).astype(np.uint8)).resize(size)
    img(1).save(tmp_path / "a.png")
    shutil.copyfile(tmp_path / "a.png", tmp_path / "a_copy.png")
    img(1, (40, 30)).save(tmp_path / "a_small.jpg", quality=80)
    img(2).save(tmp_path / "b.jpg", quality=90)
    img(3).save(tmp_path / "b2.jpg", quality=90)
    img(4).save(tmp_path / "c.jpg", quality=90)
    names = ["a.png", "a_copy.png", "a_small.jpg", "b.jpg", "b2.jpg", "c.jpg"]
    base = rng.standard_normal((4, 64))
    a, b, c, d = _unit(base)
    noise = _unit(rng.standard_normal(64))
    X = np.stack([a, a, _unit(a + 0.25 * noise), b, b, c])
    # b2: 0.8 with b, in the plane of b and d (orthonormalised)
    d = _unit(d - (d @ b) * b)
    X[4] = _unit(0.8 * b + 0.6 * d)
    return [str(tmp_path / n) for n in names], X


def test_tiers_groups_and_keepers(collection):
    paths, X = collection
    r = find_duplicates(paths, X, T)
    kinds = [(g.kind, sorted(Path(m.path).name for m in g.members)) for g in r.groups]
    assert kinds == [("near", ["a.png", "a_copy.png", "a_small.jpg"]), ("similar", ["b.jpg", "b2.jpg"])]
    near = r.groups[0]
    assert Path(near.keep).name == "a.png"  # largest, lossless, then the shorter path
    reasons = {Path(m.path).name: m.reason for m in near.members}
    assert reasons["a_copy.png"] == "byte copy of the keeper"
    assert reasons["a_small.jpg"].startswith("near: similarity")
    assert near.members[0].reason.startswith("kept: ")
    assert r.counts() == {"images": 6, "groups": {"exact": 0, "near": 1, "similar": 1}, "duplicates": 2,
                          "pairs": 4, "unreadable": 0}
    doc = r.as_dict()
    assert set(doc["groups"][0]) == {"kind", "keep", "images"}
    assert set(doc["groups"][0]["images"][0]) == {"path", "score", "reason"}


def test_an_exact_group_alone_is_exact(collection):
    paths, X = collection
    r = find_duplicates(paths[:2] + paths[3:4], X[[0, 1, 3]], T)
    assert [g.kind for g in r.groups] == ["exact"]


def test_verification_demotes_a_near_pair_it_cannot_confirm(collection):
    paths, X = collection
    calls = []

    def verifier(a, b):
        calls.append((Path(a).name, Path(b).name))
        ok = "a_small.jpg" not in (Path(a).name, Path(b).name)
        n = 40 if ok else 30  # 30 inliers of 60: too few a share
        return Verification(n, np.eye(3), np.zeros((n, 4), np.float32), 40 if ok else 60)

    r = find_duplicates(paths, X, T, verifier=verifier)
    assert ("a.png", "a_copy.png") not in calls  # exact copies need no verification
    kinds = sorted((g.kind, sorted(Path(m.path).name for m in g.members)) for g in r.groups)
    # a_small is demoted: similar to the keeper of the exact group, not a copy of it
    assert kinds == [("exact", ["a.png", "a_copy.png"]), ("similar", ["a.png", "a_small.jpg"]),
                     ("similar", ["b.jpg", "b2.jpg"])]
    assert r.verified and r.as_dict()["thresholds"]["verified"]


def test_thresholds_decide(collection):
    paths, X = collection
    r = find_duplicates(paths, X, Thresholds(near=0.75, similar=0.7, slack=0.0))
    assert sorted(g.kind for g in r.groups) == ["near", "near"]


def test_mismatched_inputs_are_refused(collection):
    paths, X = collection
    with pytest.raises(DataError, match="5 descriptors for 6 paths"):
        find_duplicates(paths, X[:5], T)
    assert find_duplicates([], np.zeros((0, 64), np.float32), T).groups == []
