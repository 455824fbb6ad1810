"""Retrieval evaluation: mAP and mP@k of the revisited Oxford/Paris protocol.

The protocol (Radenović et al., "Revisiting Oxford and Paris", CVPR 2018):

* For one query, the database ranking is scanned best first. *Junk* images are taken out of the
  ranking (the images after them move up), then the average precision is the area under the
  precision/recall curve by the **trapezoidal rule**: the j-th positive (0-based) at 0-based
  position ``r`` (after junk removal) adds ``(p0 + p1) / (2 * n_pos)`` with ``p0 = j / r``
  (``1`` when ``r = 0``) and ``p1 = (j + 1) / (r + 1)``. ``n_pos`` counts every positive of the
  ground truth, so a positive missing from a truncated ranking adds nothing.
* **Queries with no positives** are left out of the means; their per-query AP and P@k are ``NaN``
  (and the mean is ``NaN`` when no query has a positive).
* **mP@k** follows the reference implementation exactly: the precision of query q at ``k`` is
  measured at ``k_q = min(k, rank of its last positive)`` (1-based, after junk removal), so a query
  whose positives are all retrieved before ``k`` is not penalised for having fewer than ``k`` of
  them. When no positive is retrieved at all (a truncated ranking), P@k is 0.
* **Ties**: a ranking is given, so ties are broken by whatever order the ranks say; the scores
  never reach this module. :func:`ranks_from_scores` builds ranks from scores with a documented
  tie rule (equal scores: lower database index first).
* An index listed both as positive and as junk counts as positive (junk is ``junk \\ ok``).
* Setups for ground truth with ``easy``/``hard``/``junk`` lists: **Easy** (ok = easy;
  junk = junk + hard), **Medium** (ok = easy + hard; junk = junk), **Hard** (ok = hard;
  junk = junk + easy).

Values are fractions in [0, 1]; tables multiply by 100.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Sequence, Tuple

import numpy as np

DEFAULT_KAPPAS: Tuple[int, ...] = (1, 5, 10)
SETUPS: Tuple[str, ...] = ("easy", "medium", "hard")


class MapResult(NamedTuple):
    """Result of :func:`compute_map`; unpacks as ``map, aps, mp, prs``.

    map: float, mean AP over queries with positives (NaN if none has any).
    aps: (Q,) float64 per-query AP, NaN for queries with no positives.
    mp: (K,) float64 mean precision at each kappa (same queries as ``map``).
    prs: (Q, K) float64 per-query precision at each kappa, NaN rows for queries with no positives.
    """

    map: float
    aps: np.ndarray
    mp: np.ndarray
    prs: np.ndarray


def average_precision(positions: np.ndarray, n_pos: int) -> float:
    """Trapezoidal AP from the sorted 0-based positions of the retrieved positives.

    positions: (P,) int, strictly increasing 0-based positions of the positives in the ranking,
    junk already removed; ``n_pos`` ≥ 1 is the number of positives in the ground truth (≥ P).
    """
    if n_pos <= 0:
        raise ValueError("average_precision needs n_pos >= 1")
    r = np.asarray(positions, dtype=np.float64)
    if r.size == 0:
        return 0.0
    j = np.arange(r.size, dtype=np.float64)
    p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1.0))
    p1 = (j + 1.0) / (r + 1.0)
    return float(np.sum(p0 + p1) / (2.0 * n_pos))


def _as_index_set(values: object) -> np.ndarray:
    if values is None:
        return np.empty(0, dtype=np.int64)
    arr = np.asarray(values).reshape(-1)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    return np.unique(arr.astype(np.int64))


def _check_ranks(ranks: np.ndarray, n_queries: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(f"ranks must be (Q, N), got shape {ranks.shape}")
    if ranks.shape[0] != n_queries:
        raise ValueError(f"ranks has {ranks.shape[0]} rows but gnd has {n_queries} queries")
    if ranks.size and not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(f"ranks must hold integer database indices, got dtype {ranks.dtype}")
    return ranks


def compute_map(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, object]],
    kappas: Sequence[int] = DEFAULT_KAPPAS,
) -> MapResult:
    """mAP and mP@k of a ranking.

    ranks: (Q, N) int, row q lists database indices best first (N may be shorter than the
        database: positives not listed count as never retrieved).
    gnd: Q dicts with ``ok`` (positive indices) and optional ``junk`` (indices removed from the
        ranking before scoring, e.g. the query itself).
    kappas: the k of mP@k (1-based cut-offs).
    Returns a :class:`MapResult` ``(map, aps, mp, prs)``; see the module docstring for the rules.
    """
    ranks = _check_ranks(ranks, len(gnd))
    kappas = [int(k) for k in kappas]
    if any(k < 1 for k in kappas):
        raise ValueError(f"kappas must be >= 1, got {kappas}")
    nq = len(gnd)
    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(kappas)), np.nan)
    for q in range(nq):
        ok = _as_index_set(gnd[q].get("ok"))
        if ok.size == 0:
            continue
        junk = np.setdiff1d(_as_index_set(gnd[q].get("junk")), ok)
        row = ranks[q]
        is_pos = np.isin(row, ok)
        is_junk = np.isin(row, junk)
        # position after removing junk = position - number of junk strictly before it
        junk_before = np.cumsum(is_junk) - is_junk
        pos = (np.flatnonzero(is_pos) - junk_before[is_pos]).astype(np.int64)
        aps[q] = average_precision(pos, ok.size)
        if pos.size == 0:
            prs[q] = 0.0
            continue
        pos1 = pos + 1
        last = int(pos1.max())
        for i, k in enumerate(kappas):
            kq = min(last, k)
            prs[q, i] = np.count_nonzero(pos1 <= kq) / kq
    valid = ~np.isnan(aps)
    if valid.any():
        m = float(aps[valid].mean())
        mp = prs[valid].mean(axis=0)
    else:
        m = float("nan")
        mp = np.full(len(kappas), np.nan)
    return MapResult(m, aps, mp, prs)


def revisited_gnd(gnd: Sequence[Mapping[str, object]], setup: str) -> List[Dict[str, np.ndarray]]:
    """Turn easy/hard/junk ground truth into ok/junk lists for one setup (easy, medium, hard)."""
    out: List[Dict[str, np.ndarray]] = []
    for g in gnd:
        easy = _as_index_set(g.get("easy"))
        hard = _as_index_set(g.get("hard"))
        junk = _as_index_set(g.get("junk"))
        if setup == "easy":
            ok, ign = easy, np.concatenate([junk, hard])
        elif setup == "medium":
            ok, ign = np.concatenate([easy, hard]), junk
        elif setup == "hard":
            ok, ign = hard, np.concatenate([junk, easy])
        else:
            raise ValueError(f"unknown setup {setup!r}; expected one of {', '.join(SETUPS)}")
        out.append({"ok": ok, "junk": ign})
    return out


def revisited_eval(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, object]],
    kappas: Sequence[int] = DEFAULT_KAPPAS,
) -> Dict[str, Dict[str, float]]:
    """Full revisited-protocol report.

    ranks: (Q, N) int as in :func:`compute_map`; gnd: Q dicts with ``easy``, ``hard``, ``junk``.
    Returns ``{setup: {"map": m, "mp@1": .., "mp@5": .., "mp@10": .., "n_queries": n}}`` for
    setup in easy/medium/hard, where ``n_queries`` counts the queries with a positive in that setup.
    """
    report: Dict[str, Dict[str, float]] = {}
    for setup in SETUPS:
        res = compute_map(ranks, revisited_gnd(gnd, setup), kappas)
        entry: Dict[str, float] = {"map": res.map}
        for k, v in zip(kappas, res.mp):
            entry[f"mp@{int(k)}"] = float(v)
        entry["n_queries"] = int(np.count_nonzero(~np.isnan(res.aps)))
        report[setup] = entry
    return report


def revisited_map(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, object]],
    kappas: Sequence[int] = DEFAULT_KAPPAS,
) -> Dict[str, float]:
    """``{"easy": mAP, "medium": mAP, "hard": mAP}`` of the revisited protocol (see
    :func:`revisited_eval` for mP@k too). ranks: (Q, N) int; gnd: dicts with easy/hard/junk."""
    return {s: v["map"] for s, v in revisited_eval(ranks, gnd, kappas).items()}


def ranks_from_scores(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Rank database items by decreasing score.

    scores: (Q, N) float similarities. Returns (Q, min(k, N)) int64 database indices, best first;
    equal scores keep the lower database index first (stable sort), so ties are deterministic.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (Q, N), got shape {scores.shape}")
    order = np.argsort(-scores, axis=1, kind="stable").astype(np.int64)
    return order if k is None else order[:, :k]


def format_table(report: Mapping[str, Mapping[str, float]], name: str = "", k: int = 10) -> str:
    """The papers' layout: one line ``name  E  M  H`` of mAP and one of mP@k, in percent."""
    mp = f"mp@{k}"
    head = f"{'':<24}{'mAP E':>8}{'M':>8}{'H':>8}   {'mP@' + str(k) + ' E':>9}{'M':>8}{'H':>8}"

    def pct(v: float) -> str:
        return "   -" if v != v else f"{100.0 * v:.2f}"

    row = f"{name:<24}" + "".join(f"{pct(report[s]['map']):>8}" for s in SETUPS)
    row += "   " + f"{pct(report['easy'].get(mp, float('nan'))):>9}"
    row += "".join(f"{pct(report[s].get(mp, float('nan'))):>8}" for s in SETUPS[1:])
    return head + "\n" + row
