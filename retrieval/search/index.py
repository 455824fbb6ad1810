"""A searchable collection of descriptors: a faiss index plus what made it, in one folder.

Folder layout (written to a temporary folder and renamed, so a crash never leaves a broken index)::

    index/
      faiss.index       faiss index (inner product on L2-normalised descriptors = cosine)
      descriptors.npy   (N, D) float32 row-major: exact re-ranking, DBA, rebuilding another factory
      paths.json        the N image paths, in index order
      meta.json         format, factory, dim, count, the model's config and fingerprint

Any faiss factory string works (``Flat``, ``HNSW32``, ``IVF1024,PQ64``, ``OPQ64,IVF1024,PQ64``...).
The templates ``{n}`` (inverted lists) and ``{m}`` (PQ sub-quantizers) and the aliases ``ivfpq``,
``opq`` and ``hnsw`` are filled from the collection size and dimension when the index is trained
(:func:`resolve_factory`). Compressed indexes re-rank their top candidates with exact inner products
from ``descriptors.npy`` by default.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError, DataError, ModelMismatchError
from retrieval.core.io import atomic_dir

INDEX_FORMAT = "gemseg-index"
INDEX_VERSION = 1
# "np": no polysemous training (only needed for Hamming-filtered search; costs minutes to train)
ALIASES = {"ivfpq": "IVF{n},PQ{m}np", "opq": "OPQ{m},IVF{n},PQ{m}np", "hnsw": "HNSW32"}


@dataclass
class IndexConfig:
    """How descriptors are indexed and searched.

    factory: faiss factory string or alias (see module doc). train_size: descriptors sampled to
    train a compressed index (``None`` = chosen from the collection size). nprobe / ef_search:
    search-time accuracy knobs of IVF / HNSW indexes. rerank: re-rank the top ``rerank_k``
    candidates with exact inner products (``None`` = on for every index that is not exact).
    """

    factory: str = "Flat"
    train_size: Optional[int] = None
    nprobe: Optional[int] = None
    ef_search: Optional[int] = None
    rerank: Optional[bool] = None
    rerank_k: int = 100
    seed: int = 0

    def validate(self) -> None:
        if not self.factory.strip():
            raise ConfigError("index.factory: empty factory string")
        if self.rerank_k < 1:
            raise ConfigError(f"index.rerank_k: must be ≥ 1, got {self.rerank_k}")


def _faiss():
    import faiss  # imported lazily: heavy, and tests of other modules need not pay for it

    return faiss


def _pq_m(d: int) -> int:
    """Sub-quantizer count for PQ: about d/16 bytes per vector, a divisor of d, in [4, 64]."""
    target = max(4, min(64, d // 16))
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), -m))


def resolve_factory(factory: str, n: int, d: int) -> str:
    """Fill ``{n}`` (inverted lists ≈ 4·√n, a power of two, at most n/39) and ``{m}`` in a
    factory string or alias, for ``n`` descriptors of dimension ``d``."""
    f = ALIASES.get(factory.strip().lower(), factory.strip())
    if "{n}" in f:
        nlist = 2 ** max(0, int(round(math.log2(max(1.0, 4 * math.sqrt(max(n, 1)))))))
        nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))
        f = f.replace("{n}", str(nlist))
    if "{m}" in f:
        f = f.replace("{m}", str(_pq_m(d)))
    return f


def minimum_size(factory: str, dim: int, n: int) -> int:
    """The fewest descriptors the factory (resolved for ``n`` descriptors of dimension ``dim``)
    can be trained on: the IVF lists, and 2^bits codewords per PQ sub-quantizer (256 for ``PQ{m}``,
    also inside OPQ); 0 for factories that need no training (Flat, HNSW) and unknown strings."""
    faiss = _faiss()
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


def is_exact(factory: str) -> bool:
    """True for factories whose scores are exact inner products (no re-ranking needed)."""
    return factory.replace(" ", "").lower() in ("flat", "idmap,flat")


def _train_size(index: Any, n: int, requested: Optional[int]) -> int:
    if requested:
        return min(n, requested)
    faiss = _faiss()
    nlist = 0
    try:
        ivf = faiss.extract_index_ivf(index)
        nlist = ivf.nlist
    except RuntimeError:
        pass
    return min(n, max(50 * nlist, 256 * 40, 10000))


def check_index_target(folder: Union[str, Path]) -> None:
    """Refuse to write an index over anything that is not one: a file, or a non-empty folder
    without ``meta.json`` (the user's data is never overwritten)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir()
                            or (any(folder.iterdir()) and not (folder / "meta.json").is_file())):
        raise DataError(f"{folder} exists and is not a gemseg index; choose another --out")


class ImageIndex:
    """Descriptors of a collection of images in a faiss inner-product index.

    Args:
        dim: descriptor dimension D.
        factory: faiss factory string (templates allowed until the index is trained).
        model_config: the descriptor model's config as a plain dict (stored in meta.json).
        fingerprint: the descriptor model's fingerprint (``DescriptorNet.fingerprint()``).
        config: search settings (:class:`IndexConfig`).
    """

    def __init__(self, dim: int, factory: str = "Flat", model_config: Optional[Dict[str, Any]] = None,
                 fingerprint: Optional[str] = None, config: Optional[IndexConfig] = None) -> None:
        self.dim = int(dim)
        self.config = config or IndexConfig(factory=factory)
        self.factory = factory
        self.model_config = model_config or {}
        self.fingerprint = fingerprint
        self.model_source: Optional[str] = None  # checkpoint/config the model came from, if any
        self.paths: List[str] = []
        self._desc: List[np.ndarray] = []
        self._index: Any = None
        self.train_seconds = 0.0
        if "{" not in factory and factory.strip().lower() not in ALIASES:
            self._index = self._make(factory)

    # -- building ----------------------------------------------------------------------------
    def _make(self, factory: str) -> Any:
        faiss = _faiss()
        try:
            return faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[-1][:160]
            raise ConfigError(f"invalid faiss factory string '{factory}' for dimension {self.dim}: {msg}") from None

    @property
    def ntotal(self) -> int:
        return len(self.paths)

    def __len__(self) -> int:
        return self.ntotal

    def add(self, descriptors: np.ndarray, paths: Sequence[Union[str, Path]]) -> None:
        """Add ``descriptors`` (n, D) float32 for ``paths`` (n). Trains the index first when it
        needs training (on a sample of these descriptors)."""
        X = np.ascontiguousarray(descriptors, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ModelMismatchError(f"descriptors of shape {X.shape} do not fit a {self.dim}-d index")
        if len(paths) != X.shape[0]:
            raise ValueError(f"{X.shape[0]} descriptors but {len(paths)} paths")
        if X.shape[0] == 0:
            return
        if self._index is None:
            resolved = resolve_factory(self.factory, self.ntotal + X.shape[0], self.dim)
            self._index = self._make(resolved)
            self.factory = resolved
        if not self._index.is_trained:
            pool = np.concatenate(self._desc + [X]) if self._desc else X
            n_train = _train_size(self._index, pool.shape[0], self.config.train_size)
            rng = np.random.default_rng(self.config.seed)
            sample = pool[rng.choice(pool.shape[0], n_train, replace=False)] if n_train < pool.shape[0] else pool
            t0 = time.perf_counter()
            try:
                self._index.train(np.ascontiguousarray(sample))
            except RuntimeError as e:
                raise DataError(
                    f"cannot train index '{self.factory}' on {sample.shape[0]} descriptors "
                    f"({str(e).strip().splitlines()[-1][:120]}); index more images or use --factory Flat") from None
            self.train_seconds = time.perf_counter() - t0
            if self._desc:  # descriptors stored before training (only possible via load of empty)
                self._index.add(np.concatenate(self._desc))
        self._index.add(X)
        self._desc.append(X)
        self.paths.extend(str(p) for p in paths)

    def check_size(self, n: int) -> None:
        """Before any image is described: a factory that must be trained refuses a collection of
        ``n`` images smaller than :func:`minimum_size`, in plain words (DataError)."""
        if self._index is not None and self._index.is_trained:
            return
        need = minimum_size(self.factory, self.dim, n)
        if n < need:
            raise DataError(f"the '{self.factory}' index needs at least {need} images to train; this collection "
                            f"has {n}: use --factory Flat (exact) or hnsw below that")

    # -- searching ---------------------------------------------------------------------------
    def descriptors(self) -> np.ndarray:
        """All stored descriptors, (N, D) float32 in index order."""
        if not self._desc:
            return np.zeros((0, self.dim), np.float32)
        if len(self._desc) > 1:
            self._desc = [np.ascontiguousarray(np.concatenate(self._desc))]
        return self._desc[0]

    def check_model(self, fingerprint: Optional[str], dim: Optional[int] = None) -> None:
        """Refuse descriptors made by another model than the one that built this index."""
        if dim is not None and dim != self.dim:
            raise ModelMismatchError(
                f"query descriptor has dimension {dim} but the index holds {self.dim}-d descriptors "
                f"of model {self.fingerprint}; search with the model that built the index")
        if fingerprint is not None and self.fingerprint is not None and fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"the query model (fingerprint {fingerprint}) is not the one that built this index "
                f"({self.fingerprint}); search with the index's model or re-index")

    @classmethod
    def load_built_by(cls, folder: Union[str, Path], fingerprint: str, hint: str) -> "ImageIndex":
        """:meth:`load` the index at ``folder`` and require that the model of ``fingerprint`` built
        it; otherwise a one-line ModelMismatchError that ends with ``hint`` (what to do instead)."""
        index = cls.load(folder)
        if index.fingerprint != fingerprint:
            raise ModelMismatchError(f"{folder} was built by another model (fingerprint {index.fingerprint}, "
                                     f"this model {fingerprint}); {hint}")
        return index

    def search(self, queries: np.ndarray, k: int = 10, *, fingerprint: Optional[str] = None,
               nprobe: Optional[int] = None, ef_search: Optional[int] = None,
               rerank: Optional[bool] = None, rerank_k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` database items for each query.

        Args:
            queries: (Q, D) float32 (a (D,) vector is taken as one query).
            fingerprint: the query model's fingerprint; a different one raises ModelMismatchError.
        Returns:
            scores (Q, k) float32 (inner products, best first) and ids (Q, k) int64 (−1 = none).
        """
        Q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        self.check_model(fingerprint, Q.shape[1])
        if self._index is None or self.ntotal == 0:
            return np.zeros((Q.shape[0], 0), np.float32), np.zeros((Q.shape[0], 0), np.int64)
        k = min(k, self.ntotal)
        self._set_params(nprobe if nprobe is not None else self.config.nprobe,
                         ef_search if ef_search is not None else self.config.ef_search)
        if rerank is None:
            rerank = self.config.rerank if self.config.rerank is not None else not is_exact(self.factory)
        if not rerank:
            scores, ids = self._index.search(Q, k)
            return scores, ids
        kk = min(self.ntotal, max(k, rerank_k or self.config.rerank_k))
        _, cand = self._index.search(Q, kk)
        X = self.descriptors()
        exact = np.einsum("qkd,qd->qk", X[np.clip(cand, 0, None)], Q)
        exact[cand < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        ids = np.take_along_axis(cand, order, axis=1)
        scores = np.take_along_axis(exact, order, axis=1).astype(np.float32)
        return scores, ids

    def _set_params(self, nprobe: Optional[int], ef_search: Optional[int]) -> None:
        faiss = _faiss()
        ps = faiss.ParameterSpace()
        if nprobe is not None:
            try:
                ps.set_index_parameter(self._index, "nprobe", int(nprobe))
            except RuntimeError:
                pass  # not an IVF index
        if ef_search is not None:
            try:
                ps.set_index_parameter(self._index, "efSearch", int(ef_search))
            except RuntimeError:
                pass  # not an HNSW index

    # -- persistence ---------------------------------------------------------------------------
    def meta(self) -> Dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "factory": self.factory,
            "dim": self.dim,
            "count": self.ntotal,
            "fingerprint": self.fingerprint,
            "model": self.model_config,
            "model_source": self.model_source,
            "index_config": {k: v for k, v in vars(self.config).items()},
            "bytes_per_vector": self.bytes_per_vector(),
        }

    def bytes_per_vector(self) -> Optional[float]:
        if self._index is None or self.ntotal == 0:
            return None
        faiss = _faiss()
        return len(faiss.serialize_index(self._index)) / self.ntotal

    def save(self, folder: Union[str, Path]) -> Path:
        """Write the index folder atomically (a temporary folder renamed over ``folder``)."""
        faiss = _faiss()
        folder = Path(folder)
        check_index_target(folder)
        with atomic_dir(folder) as tmp:
            if self._index is not None:
                faiss.write_index(self._index, str(tmp / "faiss.index"))
            np.save(tmp / "descriptors.npy", self.descriptors())
            (tmp / "paths.json").write_text(json.dumps(self.paths))
            (tmp / "meta.json").write_text(json.dumps(self.meta(), indent=2))
        return folder

    @classmethod
    def load(cls, folder: Union[str, Path], mmap: bool = False) -> "ImageIndex":
        """Read an index folder written by :meth:`save`."""
        faiss = _faiss()
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            if not folder.exists():
                raise DataError(f"index not found: {folder} (build one with tools/index.py --images DIR --out {folder})")
            raise DataError(f"{folder} is not a gemseg index folder (no meta.json); build one with tools/index.py")
        try:
            meta = json.loads(meta_path.read_text())
            paths = json.loads((folder / "paths.json").read_text())
            desc = np.load(folder / "descriptors.npy", mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as e:
            raise DataError(f"index {folder} is damaged: {e}") from None
        if meta.get("format") != INDEX_FORMAT:
            raise DataError(f"{folder} is not a gemseg index folder")
        cfg = from_dict(IndexConfig, meta.get("index_config", {}), where=f"{meta_path}:index_config")
        obj = cls(meta["dim"], meta["factory"], meta.get("model"), meta.get("fingerprint"), cfg)
        if (folder / "faiss.index").is_file():
            try:
                obj._index = faiss.read_index(str(folder / "faiss.index"))
            except RuntimeError as e:
                raise DataError(f"index {folder} is damaged: {str(e).strip().splitlines()[-1][:120]}") from None
        obj.model_source = meta.get("model_source")
        obj.paths = list(paths)
        obj._desc = [desc] if len(paths) else []
        if obj._index is not None and obj._index.ntotal != len(paths):
            raise DataError(f"index {folder} is damaged: {obj._index.ntotal} vectors for {len(paths)} paths")
        return obj
