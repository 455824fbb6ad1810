"""retrieval.search.index_config: the ``index:`` section of a config (how an index is built and
searched), read from YAML with its defaults and checked in one line."""
from __future__ import annotations

import pytest

from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError
from retrieval.search.index_config import IndexConfig


def test_defaults_and_values_read_from_a_section():
    c = IndexConfig()
    assert (c.factory, c.train_size, c.nprobe, c.ef_search, c.rerank, c.rerank_k, c.seed) == \
        ("Flat", None, None, None, None, 100, 0)
    c = from_dict(IndexConfig, {"factory": "IVF{n},PQ8np", "nprobe": 16, "rerank_k": 50}, "index")
    assert (c.factory, c.nprobe, c.rerank_k) == ("IVF{n},PQ8np", 16, 50)
    with pytest.raises(ConfigError, match="index.rerank_k: expected an integer, got '50'"):
        from_dict(IndexConfig, {"rerank_k": "50"}, "index")
    with pytest.raises(ConfigError, match="did you mean 'nprobe'"):
        from_dict(IndexConfig, {"nprobes": 4}, "index")


@pytest.mark.parametrize("kw, needle", [({"factory": "  "}, "index.factory: empty"),
                                        ({"rerank_k": 0}, "index.rerank_k: must be ≥ 1")])
def test_bad_values_are_one_line_config_errors(kw, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        IndexConfig(**kw).validate()
    assert "\n" not in str(e.value)
