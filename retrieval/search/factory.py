"""Which faiss index to build: factory strings, their templates and aliases, and ``auto``.

``auto`` chooses from the collection size N, the dimension D and a memory budget, following
faiss's guidelines for choosing an index (and the rules autofaiss applies):

* N < 10⁴: ``Flat`` (exact search; nothing to train, fast enough);
* while it fits the budget: ``HNSW32`` for N ≤ 10⁶ (in RAM only; not with ``--on-disk``), else
  ``IVF{n},Flat`` (lossless codes, so no re-ranking error);
* beyond: ``OPQ{m},IVF{n},PQ{m}`` with the most bytes per vector ``m`` (a divisor of D, at most
  D/2) whose codes and ids fit the budget; compressed indexes re-rank from the stored descriptors.

HNSW indexes are made with a search beam of ``efSearch`` = :data:`HNSW_EF_SEARCH` (128) instead of
faiss's 16 (it is stored with the index; ``--ef-search`` still overrides it per search; a build from
descriptor shards replaces it by the cheapest value reaching a target recall,
:mod:`retrieval.search.build`), and a construction beam of ``efConstruction`` =
:data:`HNSW_EF_CONSTRUCTION` (64) instead of faiss's 40: on 10⁵ clustered 128-d descriptors it cost
1.39× the CPU time of adding (23.4 → 32.5 s) and searched 1.75× faster at recall@10 0.98
(efSearch 96 → 64); 80 was 1.79× to add, more than a build may spend against autofaiss's
(``benchmarks/bench_peers.py``, which builds with faiss's 40). hnswlib's default is 200, Qdrant's
100, Weaviate's 128: 64 is not a value fitted to these vectors. On 10⁵
clustered 128-d descriptors (``benchmarks/bench_peers.py``) faiss's 16 found 0.942 of the exact
top-10 and 128 found 0.986; asking faiss for 100 candidates to re-rank does not widen its beam.
Qdrant's default ``hnsw_ef`` is 100 and Weaviate's dynamic ef starts at 100: the same order.

Inverted lists: ≈ 4·√N up to N = 10⁶, ≈ 16·√N above (a power of two either way); from 2¹⁴ lists
on the coarse quantizer is an HNSW graph (``IVF{n}_HNSW32``) so that assigning a vector stays fast.
The budget counts what search keeps in memory: the index's codes, ids and quantizer (with
``--on-disk`` the inverted lists are paged in from disk, but sized so that the page cache can hold
them); the float32 descriptors kept for re-ranking are memory-mapped and not counted.
"""
from __future__ import annotations

import math
import re
from typing import Any, Optional, Tuple, Union

import faiss

from retrieval.core.errors import ConfigError

# "np": no polysemous training (only needed for Hamming-filtered search; costs minutes to train)
ALIASES = {"ivfpq": "IVF{n},PQ{m}np", "opq": "OPQ{m},IVF{n},PQ{m}np", "hnsw": "HNSW32"}
EXACT_BELOW = 10_000
#: efSearch of the HNSW indexes :func:`make_faiss_index` makes (faiss's own default: 16)
HNSW_EF_SEARCH = 128
#: efConstruction of the HNSW indexes :func:`make_faiss_index` makes (faiss's own default: 40)
HNSW_EF_CONSTRUCTION = 64
HNSW_MAX = 1_000_000
_UNITS = {"": 1, "b": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}


def parse_bytes(text: Union[str, int, float]) -> int:
    """``"4G"`` → 4·2³⁰ bytes (units B, K, M, G, T, optionally followed by ``B`` / ``iB``)."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
    if not m:
        raise ConfigError(f"memory budget '{text}': expected a size such as 4G, 512M or 2.5GB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def n_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: 2^round(log2(4√n)) up to 10⁶, 2^round(log2(16√n)) above,
    at most n/39 (faiss wants ≥ 39 training points per list)."""
    c = 4.0 if n <= 1_000_000 else 16.0
    nlist = 2 ** max(0, int(round(math.log2(max(1.0, c * math.sqrt(max(n, 1)))))))
    return max(1, min(nlist, n // 39 if n >= 39 else 1))


def _coarse(nlist: int) -> str:
    return f"IVF{nlist}_HNSW32" if nlist >= 2 ** 14 else f"IVF{nlist}"


def pq_m(d: int) -> int:
    """Sub-quantizer count for PQ: about d/16 bytes per vector, a divisor of d, in [4, 64]."""
    target = max(4, min(64, d // 16))
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), -m))


def resolve_factory(factory: str, n: int, d: int) -> str:
    """Fill ``{n}`` (inverted lists, :func:`n_lists`) and ``{m}`` (:func:`pq_m`) in a factory
    string or alias, for ``n`` descriptors of dimension ``d``."""
    f = ALIASES.get(factory.strip().lower(), factory.strip())
    if "{n}" in f:
        f = f.replace("{n}", str(n_lists(n)))
    if "{m}" in f:
        f = f.replace("{m}", str(pq_m(d)))
    return f


def make_faiss_index(factory: str, dim: int) -> Any:
    """``faiss.index_factory`` (inner product) with a one-line ConfigError for a bad string; an
    HNSW index (also behind a pre-transform) gets ``efSearch`` = :data:`HNSW_EF_SEARCH` and
    ``efConstruction`` = :data:`HNSW_EF_CONSTRUCTION` (at least)."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1][:160]
        raise ConfigError(f"invalid faiss factory string '{factory}' for dimension {dim}: {msg}") from None
    core = _core(index)[0]
    if isinstance(core, faiss.IndexHNSW):
        core.hnsw.efSearch = max(int(core.hnsw.efSearch), HNSW_EF_SEARCH)
        core.hnsw.efConstruction = max(int(core.hnsw.efConstruction), HNSW_EF_CONSTRUCTION)
    return index


def ivf_of(index: Any) -> Optional[Any]:
    """The ``faiss.IndexIVF`` inside a faiss ``index`` (behind pre-transforms, an id map or a
    refinement), or ``None`` when it has no inverted lists (Flat, HNSW, PQ...)."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _core(index: Any) -> Tuple[Any, bool]:
    """The faiss index behind an index's pre-transforms (downcast), and whether it had any."""
    core = faiss.downcast_index(index)
    transformed = False
    while isinstance(core, faiss.IndexPreTransform):
        core, transformed = faiss.downcast_index(core.index), True
    return core, transformed


def search_knob(index: Any) -> Optional[str]:
    """The search-time knob of a faiss ``index``: ``"nprobe"`` (inverted lists), ``"ef_search"``
    (an HNSW graph, also behind a pre-transform), or ``None`` (Flat, PQ...: nothing to tune)."""
    if ivf_of(index) is not None:
        return "nprobe"
    return "ef_search" if isinstance(_core(index)[0], faiss.IndexHNSW) else None


def lossless_codes(index: Any) -> bool:
    """True when a faiss ``index``'s scores are the exact inner products of the added vectors
    (``HNSW…Flat``, ``IVF…,Flat``, no pre-transform): re-ranking them with the stored
    descriptors changes no order, only how many candidates are asked for."""
    core, transformed = _core(index)
    if transformed:
        return False
    if isinstance(core, faiss.IndexHNSWFlat):
        return True
    ivf = ivf_of(index)
    return ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFlat)


def is_exact(factory: str) -> bool:
    """True for factories whose scores are exact inner products (no faiss index, no re-ranking)."""
    return factory.replace(" ", "").lower() in ("flat", "idmap,flat")


def is_auto(factory: Optional[str]) -> bool:
    return factory is not None and factory.strip().lower() == "auto"


def auto_factory(n: int, d: int, budget: Union[str, int], on_disk: bool = False) -> str:
    """The factory ``auto`` means for ``n`` vectors of dimension ``d`` under ``budget`` bytes
    (see the module doc). ``on_disk``: the index must be an IVF index (its lists go to disk)."""
    budget_b = parse_bytes(budget)
    if n < EXACT_BELOW and not on_disk:
        return "Flat"
    nlist = n_lists(n)
    hnsw_bytes = n * (4 * d + 2 * 32 * 4 + 16)
    if not on_disk and n <= HNSW_MAX and hnsw_bytes <= budget_b:
        return "HNSW32"
    ivf_flat_bytes = n * (4 * d + 8) + nlist * 4 * d
    if ivf_flat_bytes <= budget_b or n < EXACT_BELOW:
        return f"{_coarse(nlist)},Flat"
    for m in (64, 48, 32, 24, 16, 8, 4):
        if d % m == 0 and m <= d // 2 and n * (m + 8) + nlist * 4 * d <= budget_b:
            return f"OPQ{m},{_coarse(nlist)},PQ{m}np"
    raise ConfigError(f"{n} descriptors of dimension {d} do not fit a {budget} budget even at 4 bytes "
                      f"per vector ({n * 12 / 2 ** 30:.1f} GiB); raise --memory-budget")


def train_size(index: Any, n: int, requested: Optional[int], budget: Optional[int] = None, d: int = 0) -> int:
    """Training sample for ``index`` (faiss) from ``n`` vectors: ``requested``, or 50 per inverted
    list (at least 10,240; 30 per list for 2¹⁴+ lists), capped by a quarter of ``budget`` bytes."""
    if requested:
        return min(n, requested)
    ivf = ivf_of(index)
    nlist = 0 if ivf is None else int(ivf.nlist)
    per_list = 30 if nlist >= 2 ** 14 else 50
    size = max(per_list * nlist, 256 * 40, 10000)
    if budget and d:
        size = min(size, max(256 * 40, budget // 4 // (4 * d)))
    return min(n, size)


def minimum_size(factory: str, dim: int, n: int) -> int:
    """The fewest descriptors the factory (resolved for ``n`` descriptors of dimension ``dim``)
    can be trained on: the IVF lists, and 2^bits codewords per PQ sub-quantizer (256 for ``PQ{m}``,
    also inside OPQ); 0 for factories that need no training (Flat, HNSW) and unknown strings."""
    try:
        base = faiss.index_factory(dim, resolve_factory(factory, n, dim), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        return 0  # an invalid string is reported, in its own words, when the index is made
    if base.is_trained:
        return 0
    need, todo, keep = 1, [base], []  # keep: the swig wrappers must outlive their downcasts
    while todo:
        ix = faiss.downcast_index(todo.pop())
        keep.append(ix)
        if isinstance(ix, faiss.IndexPreTransform):
            for i in range(ix.chain.size()):
                vt = faiss.downcast_VectorTransform(ix.chain.at(i))
                keep.append(vt)
                if isinstance(vt, faiss.OPQMatrix):
                    need = max(need, 256)
            todo.append(ix.index)
        if hasattr(ix, "nlist"):
            need = max(need, int(ix.nlist))
        if hasattr(ix, "pq"):
            need = max(need, int(ix.pq.ksub))
        if hasattr(ix, "storage") and ix.storage is not None:
            todo.append(ix.storage)
    return need
