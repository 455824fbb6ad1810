"""retrieval.evaluation.run: the dataset's queries for the query path (a database image by its
stored row, others by file and box), full rankings, and the refusals of evaluate_dataset."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from retrieval.core.errors import DataError
from retrieval.evaluation.datasets import EvalDataset
from retrieval.evaluation.run import eval_queries, evaluate_dataset, full_ranks


def _dataset(db_ids=None, boxes=None):
    empty = np.array([], np.int64)
    return EvalDataset(name="t", query_paths=[Path("q0.jpg"), Path("db1.jpg")], query_boxes=boxes,
                       db_paths=[Path(f"db{i}.jpg") for i in range(4)],
                       gnd=[{"easy": np.array([0]), "hard": empty, "junk": empty}] * 2, query_db_ids=db_ids)


def test_queries_that_are_database_images_use_their_row_and_skip_their_copy():
    X = np.arange(8, dtype=np.float32).reshape(4, 2)
    q0, q1 = eval_queries(_dataset(db_ids=np.array([-1, 1])), X)
    assert (q0.image, q0.self_id, q0.vector) == ("q0.jpg", None, None)
    np.testing.assert_array_equal(q1.vector, X[1])
    assert q1.self_id == 1 and q1.label == "db1.jpg" and q1.image is None
    # with a box, a database image is described again from its file, cropped
    _, boxed = eval_queries(_dataset(db_ids=np.array([-1, 1]), boxes=[None, (0, 0, 2, 2)]), X)
    assert (boxed.image, boxed.box, boxed.self_id, boxed.vector) == ("db1.jpg", (0, 0, 2, 2), 1, None)


def test_full_ranks_put_what_the_search_did_not_reach_last_in_id_order():
    results = SimpleNamespace(ids=np.array([[3, 1, -1], [0, 2, 4]], np.int64))
    np.testing.assert_array_equal(full_ranks(results, 6), [[3, 1, 0, 2, 4, 5], [0, 2, 4, 1, 3, 5]])


def test_searching_the_cache_is_refused_without_an_index_or_with_dba():
    with pytest.raises(DataError, match="needs an index folder"):
        evaluate_dataset(None, _dataset(), search_cache=True)
    with pytest.raises(DataError, match="build it with: gemseg index --dba"):
        evaluate_dataset(None, _dataset(), search_cache=True, cache="ix", dba_k=2)
