"""Find the duplicates of a described collection: the tiers, their groups and the keepers.

Given the images' paths and descriptors ((N, D) float32, L2-normalised), :func:`find_duplicates`

1. hashes every file (:mod:`retrieval.dedup.exact`): equal bytes or equal pixels are ``exact``;
2. finds every pair at or above the ``similar`` threshold (:mod:`retrieval.dedup.pairs`);
3. takes the pairs at or above ``near`` as near candidates; when a verifier is given (spatial
   verification of local features), a candidate is confirmed only when its inliers are at least
   ``min_inliers`` and ``min_share`` of its tentative matches
   (:meth:`~retrieval.dedup.thresholds.Thresholds.confirms`), else it is demoted to ``similar``;
4. groups exact and near pairs together (:mod:`retrieval.dedup.groups`, the chain cap of the
   near tier): a group whose members are all exact copies of each other is ``exact``, else ``near``;
5. groups the ``similar`` pairs among what is left — the images in no group and the keepers of
   the exact/near groups — with the similar tier's cap: a ``similar`` group links photos that are
   not copies of one another (a burst, the same object shot again), keeper of each group included;
6. picks a keeper per group (:mod:`retrieval.dedup.keeper`), with the reason, and gives every
   other member its similarity to the keeper and why it is there.

Each image is in at most one exact/near group; a keeper may also be in one similar group.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from tqdm import tqdm

from retrieval.core.errors import DataError
from retrieval.dedup.exact import exact_groups, file_digest
from retrieval.dedup.groups import group
from retrieval.dedup.keeper import FileFacts, choose_keeper, file_facts
from retrieval.dedup.pairs import Pairs, range_pairs
from retrieval.dedup.thresholds import Thresholds
from retrieval.search.verify import Verification

#: ``verifier(path_a, path_b) -> Verification`` (inliers, tentative, matches (m, 4) float32 [xa, ya, xb, yb])
Verifier = Callable[[str, str], Verification]
KINDS = ("exact", "near", "similar")


@dataclass
class Member:
    """One image of a group: ``path``; ``score``: cosine similarity to the keeper (1 for the keeper);
    ``reason``: why it is kept, or why it is a copy; ``inliers``: verified matches with the keeper
    (None when not verified); ``matches``: those matches, (m, 4) float32 [xa, ya, xb, yb] with a
    in the keeper (for the page)."""

    path: str
    score: float
    reason: str
    inliers: Optional[int] = None
    matches: Optional[np.ndarray] = None


@dataclass
class Group:
    """``kind``: exact | near | similar; ``members``: the keeper first."""

    kind: str
    members: List[Member]

    @property
    def keep(self) -> str:
        return self.members[0].path

    def as_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "keep": self.keep,
                "images": [{"path": m.path, "score": round(float(m.score), 4), "reason": m.reason,
                            **({"inliers": m.inliers} if m.inliers is not None else {})} for m in self.members]}


@dataclass
class DedupResult:
    """What :func:`find_duplicates` found. ``groups``: exact and near groups first, then similar,
    each ordered by its keeper's path; ``n_images``: images compared; ``failures``: (path, reason)
    of files left out; ``thresholds``: those used; ``verified``: whether near pairs were verified."""

    groups: List[Group]
    n_images: int
    thresholds: Thresholds
    verified: bool = False
    failures: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    pairs: int = 0

    def counts(self) -> Dict[str, Any]:
        by = {k: sum(g.kind == k for g in self.groups) for k in KINDS}
        extra = sum(len(g.members) - 1 for g in self.groups if g.kind in ("exact", "near"))
        return {"images": self.n_images, "groups": by, "duplicates": extra, "pairs": self.pairs,
                "unreadable": len(self.failures)}

    def as_dict(self) -> Dict[str, Any]:
        t = self.thresholds
        return {"groups": [g.as_dict() for g in self.groups], "counts": self.counts(),
                "thresholds": {"near": t.near, "similar": t.similar, "slack": t.slack,
                               "min_inliers": t.min_inliers, "source": t.source, "verified": self.verified},
                "failures": [{"path": p, "reason": r} for p, r in self.failures],
                "seconds": round(self.seconds, 3)}


def _verify(pairs: Pairs, paths: Sequence[str], verifier: Verifier, thresholds: Thresholds,
            progress: bool) -> Tuple[np.ndarray, Dict[Tuple[int, int], Verification]]:
    ok = np.zeros(len(pairs), bool)
    seen: Dict[Tuple[int, int], Verification] = {}
    for t, (a, b) in enumerate(tqdm(list(zip(pairs.i.tolist(), pairs.j.tolist())), desc="dedup: verify",
                                    unit="pair", disable=not progress)):
        v = seen[(a, b)] = verifier(paths[a], paths[b])
        ok[t] = thresholds.confirms(v.inliers, v.tentative)
    return ok, seen


def _facts(paths: Sequence[str], ids: Sequence[int], cache: Dict[int, FileFacts]) -> List[FileFacts]:
    for i in ids:
        if i not in cache:
            cache[i] = file_facts(paths[i])
    return [cache[i] for i in ids]


def find_duplicates(paths: Sequence[str], X: np.ndarray, thresholds: Thresholds, *,
                    verifier: Optional[Verifier] = None, progress: bool = False,
                    failures: Sequence[Tuple[str, str]] = (), **search: Any) -> DedupResult:
    """The groups of duplicates among ``paths`` described by ``X`` ((N, D) float32, row i for
    ``paths[i]``), by the steps of the module's docstring; ``search``: options of
    :func:`retrieval.dedup.pairs.range_pairs` (``exact_up_to``, ``nprobe``)."""
    t0 = time.perf_counter()
    n = len(paths)
    if X.shape[0] != n:
        raise DataError(f"{X.shape[0]} descriptors for {n} paths")
    if n == 0:
        return DedupResult([], 0, thresholds, verifier is not None, list(failures))
    paths = [str(p) for p in paths]
    exact = exact_groups(paths, progress=progress)
    exact_of = {m: k for k, g in enumerate(exact) for m in g}
    cand = range_pairs(X, thresholds.similar, progress=progress, **search)
    is_near = cand.score >= thresholds.near
    checks: Dict[Tuple[int, int], Verification] = {}
    if verifier is not None and is_near.any():
        idx = np.flatnonzero(is_near)
        both_exact = np.array([exact_of.get(int(a), -1) == exact_of.get(int(b), -2)
                               for a, b in zip(cand.i[idx], cand.j[idx])], bool)
        todo = idx[~both_exact]
        ok, checks = _verify(cand.select(np.isin(np.arange(len(cand)), todo)), paths, verifier,
                             thresholds, progress)
        is_near[todo] = ok
    near = cand.select(is_near)
    ex_i = [g[0] for g in exact for _ in g[1:]]
    ex_j = [m for g in exact for m in g[1:]]
    strong = Pairs(np.concatenate([near.i, np.array(ex_i, np.int64)]),
                   np.concatenate([near.j, np.array(ex_j, np.int64)]),
                   np.concatenate([near.score, np.ones(len(ex_i), np.float32)]))
    facts: Dict[int, FileFacts] = {}
    out: List[Group] = []
    grouped: Set[int] = set()
    keepers: Set[int] = set()
    for g in group(n, strong, X, thresholds.cap("near")):
        f = _facts(paths, g, facts)
        k, why = choose_keeper(f)
        keep = g[k]
        kind = "exact" if len({exact_of.get(m, -1 - m) for m in g}) == 1 else "near"
        members = [Member(paths[keep], 1.0, f"kept: {why}")]
        for m in g:
            if m == keep:
                continue
            members.append(_member(paths, X, keep, m, exact_of, checks, verifier, thresholds, "near"))
        out.append(Group(kind, members))
        grouped |= set(g)
        keepers.add(keep)
    free = np.array([m not in grouped or m in keepers for m in range(n)], bool)
    sim = cand.select(free[cand.i] & free[cand.j])
    similar_groups: List[Group] = []
    for g in group(n, sim, X, thresholds.cap("similar")):
        f = _facts(paths, g, facts)
        k, why = choose_keeper(f)
        keep = g[k]
        members = [Member(paths[keep], 1.0, f"kept: {why}")]
        members += [_member(paths, X, keep, m, exact_of, checks, None, thresholds, "similar") for m in g if m != keep]
        similar_groups.append(Group("similar", members))
    out.sort(key=lambda g: g.keep)
    similar_groups.sort(key=lambda g: g.keep)
    return DedupResult(out + similar_groups, n, thresholds, verifier is not None, list(failures),
                       time.perf_counter() - t0, len(cand))


def _member(paths: Sequence[str], X: np.ndarray, keep: int, m: int, exact_of: Dict[int, int],
            checks: Dict[Tuple[int, int], Verification], verifier: Optional[Verifier],
            thresholds: Thresholds, tier: str) -> Member:
    s = float(np.dot(np.asarray(X[keep], np.float32), np.asarray(X[m], np.float32)))
    if exact_of.get(m, -1) == exact_of.get(keep, -2):
        same_bytes = _same_bytes(paths[keep], paths[m])
        return Member(paths[m], s, "byte copy of the keeper" if same_bytes else "same pixels as the keeper")
    if tier == "similar":
        return Member(paths[m], s, f"similar: similarity {s:.3f} to the keeper, not a copy")
    inliers, matches = None, None
    if verifier is not None:
        key = (min(keep, m), max(keep, m))
        if key in checks:  # verified as (a = lower id, b = higher): make a the keeper
            v = checks[key]
            matches = v.matches if key[0] == keep else v.matches[:, [2, 3, 0, 1]]
        else:
            v = verifier(paths[keep], paths[m])
            matches = v.matches
        inliers = v.inliers
    text = f"near: similarity {s:.3f} to the keeper"
    if inliers is not None:
        text += f", {inliers} of {v.tentative} matches verified"
    return Member(paths[m], s, text, inliers, matches)


def _same_bytes(a: str, b: str) -> bool:
    try:
        return file_digest(a) == file_digest(b)
    except OSError:
        return False
