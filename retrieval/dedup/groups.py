"""Groups of a tier: connected components of its pairs, with a cap that splits chains.

Connected components alone chain: A ≈ B and B ≈ C put A and C together even when A and C have
nothing in common (a burst drifting across a scene, a crop of a crop). So a component is kept
whole only when *every* two of its members score at least the tier's **cap** (its threshold less
the calibrated slack, :meth:`retrieval.dedup.thresholds.Thresholds.cap`). Otherwise it is split
greedily into stars: the member with the most pairs inside what is left (ties: the highest sum
of similarities, then the lowest id) is a centre; the members paired with it join, best first,
each only if it reaches the cap with every member already in; repeat on the rest. Every group
then has a centre that each member reaches at the tier's threshold, and no two members below the
cap. Components larger than :data:`MAX_DENSE` are split on their pairs alone (the cap is checked
on the pairs that were found, not on all members).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np

from retrieval.dedup.pairs import Pairs

MAX_DENSE = 4000


def components(n: int, pairs: Pairs) -> List[List[int]]:
    """Connected components (sorted id lists of at least two, ordered by first id) of the graph
    on ``n`` nodes whose edges are ``pairs``."""
    parent = np.arange(n)

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return int(root)

    for a, b in zip(pairs.i.tolist(), pairs.j.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    out: Dict[int, List[int]] = defaultdict(list)
    for a in sorted({int(x) for x in pairs.i.tolist()} | {int(x) for x in pairs.j.tolist()}):
        out[find(a)].append(a)
    return sorted((g for g in out.values() if len(g) > 1), key=lambda g: g[0])


def _split(members: List[int], S: np.ndarray, linked: np.ndarray, cap: float) -> List[List[int]]:
    """Stars of one component: ``S`` (k, k) similarities of ``members``, ``linked`` (k, k) bool
    (pairs of the tier)."""
    left = np.ones(len(members), bool)
    out: List[List[int]] = []
    while left.sum() > 1:
        idx = np.flatnonzero(left)
        sub = linked[np.ix_(idx, idx)]
        deg = sub.sum(1)
        if deg.max() == 0:
            break
        strength = np.where(sub, S[np.ix_(idx, idx)], 0).sum(1)
        centre = int(idx[np.lexsort((idx, -strength, -deg))[0]])
        cand = [int(c) for c in idx if c != centre and linked[centre, c]]
        cand.sort(key=lambda c: (-S[centre, c], c))
        star = [centre]
        for c in cand:
            if all(S[c, m] >= cap for m in star):
                star.append(c)
        left[star] = False
        if len(star) > 1:
            out.append(sorted(members[k] for k in star))
    return out


def group(n: int, pairs: Pairs, X: Optional[np.ndarray], cap: float) -> List[List[int]]:
    """Groups (sorted id lists of at least two, ordered by first id) of ``pairs`` on ``n`` nodes,
    chains split by ``cap``. ``X``: the (N, D) float32 descriptors the scores came from (for the
    similarity of members that are not a pair); None: only the pairs' own scores are known
    (missing pairs count as below the cap)."""
    comps = components(n, pairs)
    label = np.full(n, -1, np.int64)
    for c, comp in enumerate(comps):
        label[comp] = c
    pl = label[pairs.i] if len(pairs) else np.zeros(0, np.int64)
    order = np.argsort(pl, kind="stable")
    bounds = np.searchsorted(pl[order], np.arange(len(comps) + 1))
    out: List[List[int]] = []
    for c, comp in enumerate(comps):
        sel = order[bounds[c]:bounds[c + 1]]
        k = len(comp)
        lookup = {m: t for t, m in enumerate(comp)}
        a = np.array([lookup[int(x)] for x in pairs.i[sel].tolist()], np.int64)
        b = np.array([lookup[int(x)] for x in pairs.j[sel].tolist()], np.int64)
        linked = np.zeros((k, k), bool)
        linked[a, b] = linked[b, a] = True
        if X is not None and k <= MAX_DENSE:
            V = np.asarray(X[comp], dtype=np.float32)
            S = V @ V.T
        else:
            S = np.full((k, k), -np.inf, np.float32)
            S[a, b] = S[b, a] = pairs.score[sel]
        np.fill_diagonal(S, 1.0)
        if S.min() >= cap:
            out.append(comp)
        else:
            out.extend(_split(comp, S, linked, cap))
    return sorted(out, key=lambda g: g[0])


def merge_groups(groups: Sequence[Sequence[int]]) -> List[List[int]]:
    """Overlapping groups joined (sorted lists, ordered by first id)."""
    n = max((max(g) for g in groups if g), default=-1) + 1
    edges_i = [g[0] for g in groups for _ in g[1:]]
    edges_j = [m for g in groups for m in g[1:]]
    p = Pairs(np.array(edges_i, np.int64), np.array(edges_j, np.int64), np.ones(len(edges_i), np.float32))
    return components(n, p)
