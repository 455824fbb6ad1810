"""retrieval.evaluation.metrics: revisited-protocol AP and mP@k against hand-worked rankings and a
naive loop; the table layout."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.evaluation.metrics import (
    average_precision,
    compute_map,
    format_table,
    ranks_from_scores,
    revisited_eval,
    revisited_map,
)


def naive_ap(row, ok, junk):
    """Independent reference: walk the ranking, skip junk, trapezoid between successive recalls."""
    ok, junk = set(ok), set(junk) - set(ok)
    seen = hits = 0
    ap = 0.0
    for idx in row:
        if idx in junk:
            continue
        seen += 1
        if idx in ok:
            hits += 1
            prec_before = (hits - 1) / (seen - 1) if seen > 1 else 1.0
            ap += (prec_before + hits / seen) / 2 / len(ok)
    return ap


def test_positives_at_known_ranks_hand_worked():
    ranks = np.array([[0, 1, 2, 3, 4]])
    res = compute_map(ranks, [{"ok": [0, 2], "junk": []}], kappas=(1, 5, 10))
    # j=0 at r=0: (1 + 1)/2 * 1/2 ; j=1 at r=2: (1/2 + 2/3)/2 * 1/2
    expected = 0.5 + (0.5 + 2 / 3) / 4
    assert res.map == pytest.approx(expected)
    assert res.aps[0] == pytest.approx(expected)
    # P@1 = 1; P@5 measured at min(5, last positive rank 3) = 2/3; same for P@10
    np.testing.assert_allclose(res.mp, [1.0, 2 / 3, 2 / 3])


def test_junk_is_removed_before_scoring():
    ranks = np.array([[0, 1, 2, 3, 4]])
    res = compute_map(ranks, [{"ok": [0, 2], "junk": [1]}])
    assert res.map == pytest.approx(1.0)
    np.testing.assert_allclose(res.prs[0], [1.0, 1.0, 1.0])
    # junk after the last positive changes nothing
    res2 = compute_map(ranks, [{"ok": [0, 2], "junk": [4]}])
    assert res2.map == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)


def test_query_without_positives_is_left_out_and_nan():
    ranks = np.array([[0, 1, 2], [2, 1, 0]])
    res = compute_map(ranks, [{"ok": [1], "junk": []}, {"ok": [], "junk": [0]}])
    assert np.isnan(res.aps[1]) and np.isnan(res.prs[1]).all()
    # AP of query 0: positive at r=1 → (0/1 + 1/2)/2 = 0.25; mean over query 0 only
    assert res.aps[0] == pytest.approx(0.25)
    assert res.map == pytest.approx(0.25)
    none = compute_map(ranks[:1], [{"ok": []}])
    assert np.isnan(none.map)


def test_truncated_ranking_counts_missing_positive_as_zero():
    res = compute_map(np.array([[3, 0, 1]]), [{"ok": [0, 5], "junk": []}])
    # found positive at r=1 (j=0): (0 + 1/2)/2 / 2 positives = 0.125; 5 never retrieved
    assert res.map == pytest.approx(0.125)
    res = compute_map(np.array([[3, 1]]), [{"ok": [0], "junk": []}])
    assert res.map == 0.0 and (res.prs == 0).all()


def test_ties_broken_by_lower_index_then_scored():
    scores = np.array([[0.5, 0.9, 0.9, 0.1]])
    ranks = ranks_from_scores(scores)
    np.testing.assert_array_equal(ranks, [[1, 2, 0, 3]])
    # positive = 2 tied with a negative (1) ranks second: AP = (0 + 1/2)/2 = 0.25
    assert compute_map(ranks, [{"ok": [2]}]).map == pytest.approx(0.25)
    assert compute_map(ranks, [{"ok": [1]}]).map == pytest.approx(1.0)


def test_revisited_setups_hand_worked():
    ranks = np.array([[5, 0, 3, 1, 4, 2], [0, 1, 2, 3, 4, 5]])
    gnd = [
        {"easy": [0, 2], "hard": [1], "junk": [5]},
        {"easy": [0], "hard": [], "junk": []},  # no hard positives: left out of Hard
    ]
    m = revisited_map(ranks, gnd)
    # query 0, Easy: junk {5, 1} removed → [0, 3, 4, 2]: positives at 0 and 3
    e0 = 0.5 + (1 / 3 + 2 / 4) / 4
    # Medium: junk {5} → [0, 3, 1, 4, 2]: positives at 0, 2, 4 of 3
    m0 = (2 / 2 + (1 / 2 + 2 / 3) / 2 + (2 / 4 + 3 / 5) / 2) / 3
    # Hard: junk {5, 0, 2} → [3, 1, 4]: positive at 1
    h0 = (0 + 1 / 2) / 2
    assert m["easy"] == pytest.approx((e0 + 1.0) / 2)
    assert m["medium"] == pytest.approx((m0 + 1.0) / 2)
    assert m["hard"] == pytest.approx(h0)
    rep = revisited_eval(ranks, gnd)
    assert rep["hard"]["n_queries"] == 1 and rep["easy"]["n_queries"] == 2
    # mP@10: Easy q0 positives at 1-based [1, 4] → 2/4; q1 → 1
    assert rep["easy"]["mp@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert rep["medium"]["mp@10"] == pytest.approx((3 / 5 + 1.0) / 2)
    assert rep["hard"]["mp@10"] == pytest.approx(0.5)
    assert rep["hard"]["mp@1"] == pytest.approx(0.0)
    table = format_table(rep, "toy")
    assert "toy" in table and f"{100 * m['hard']:.2f}" in table


def test_against_naive_loop_random():
    rng = np.random.default_rng(0)
    n, nq = 40, 12
    ranks = np.stack([rng.permutation(n) for _ in range(nq)])
    gnd = []
    for _ in range(nq):
        perm = rng.permutation(n)
        gnd.append({"ok": perm[: rng.integers(1, 8)], "junk": perm[8 : 8 + rng.integers(0, 6)]})
    res = compute_map(ranks, gnd)
    ref = [naive_ap(ranks[q], gnd[q]["ok"], gnd[q]["junk"]) for q in range(nq)]
    np.testing.assert_allclose(res.aps, ref, rtol=1e-12)
    assert res.map == pytest.approx(np.mean(ref))
    assert average_precision(np.array([0, 1, 2]), 3) == pytest.approx(1.0)


def test_bad_ranks_shape_refused():
    with pytest.raises(ValueError):
        compute_map(np.array([0, 1, 2]), [{"ok": [0]}])
    with pytest.raises(ValueError):
        compute_map(np.array([[0.0, 1.0]]), [{"ok": [0]}])
