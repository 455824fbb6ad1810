"""The query path: describe the queries, search the index, run the re-ranking steps, make hit records.

Everything that searches goes through :class:`QueryPath`: ``tools/search.py`` and
:func:`retrieval.search.collection.search_images`, the HTTP service
(:mod:`retrieval.serve.service`) and the evaluation (:mod:`retrieval.evaluation.run`), so the same
query, box and steps give the same hits everywhere.

1. **Describe** (:meth:`QueryPath.describe`). A :class:`Query` is an image (a file, a PIL image,
   an (H, W, 3) array), a stored id, or a vector, with an optional box:

   * an image is cropped to its box and described by the network (one forward pass per scale);
   * a stored id alone is its stored descriptor row (no forward pass); with a box, the indexed
     file is read, cropped and described. On a DBA index (``tools/index.py --dba``) the stored
     rows are the *augmented* descriptors, so a query by id searches with the augmented row while
     the same image given as a file searches with its plain descriptor: the two differ there (on
     any other index they are the same query);
   * a vector ((D,) float, L2-normalised here) is used as it is.

   ``self_id`` marks a query that *is* a database image (the evaluation's queries of a folder of
   classes): re-ranking keeps that copy out of its expansion (α-QE). Any other query, one by stored
   id included, is expanded with its top hits as they are, so a query by id and the same image
   given as a file are the same query.
2. **Search**: the index's own search (exact, or approximate with its nprobe / efSearch and exact
   re-ranking: ``search_kwargs``) for ``max(top, every step's depth)`` hits.
3. **Re-rank**: the steps (:mod:`retrieval.search.rerank`), in order, each turning the shortlist
   into a new one (:class:`~retrieval.search.rerank.step.Reranker`).
4. **Hits** (:meth:`QueryResults.hits`): the first ``top`` of each row as records
   ``{"rank", "id", "path", "score", "missing"}`` (``missing``: the file no longer exists) plus
   the fields a step added.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from retrieval.core.backbone import resolve_device
from retrieval.core.errors import DataError, GemsegError, ImageError, ModelMismatchError
from retrieval.core.images import ImageLike, as_image, image_label, load_image
from retrieval.model.network import DescriptorNet
from retrieval.search.extract import describe_pil
from retrieval.search.index import ImageIndex
from retrieval.search.query_box import crop_to_box
from retrieval.search.rerank.registry import StepsLike, parse_steps, reranker_class
from retrieval.search.rerank.step import Box, Reranker, RerankContext

QueryLike = Union["Query", ImageLike]


@dataclass
class Query:
    """One query (module docstring): ``image`` (file, PIL image or array), ``id`` (a stored id),
    ``vector`` ((D,) float), ``box`` (x1, y1, x2, y2 pixels of the image), ``label`` (how results
    name it; default: the file path, ``<image i>``, the indexed path of an id, ``<vector i>``),
    ``self_id`` (the database image this query is, kept out of its α-QE neighbours)."""

    image: Optional[ImageLike] = None
    id: Optional[int] = None
    vector: Optional[np.ndarray] = None
    box: Box = None
    label: Optional[str] = None
    self_id: Optional[int] = None

    def __post_init__(self) -> None:
        if self.image is None and self.id is None and self.vector is None:
            raise DataError("a query needs an image, a stored id or a vector")
        if self.image is not None and self.vector is not None:
            raise DataError("give a query an image or a vector, not both")
        if self.id is not None and self.image is not None or self.id is not None and self.vector is not None:
            raise DataError("give a query an image, a stored id or a vector, not two of them")
        for i in (self.id, self.self_id):
            if i is not None and (isinstance(i, bool) or not isinstance(i, (int, np.integer))):
                raise DataError(f"a stored id is an integer, got {i!r}")
        if self.vector is not None and self.box is not None:
            raise DataError("a query by vector has no image to crop to a box")

    @classmethod
    def of(cls, obj: QueryLike, box: Box = None) -> "Query":
        """``obj`` as a query: a :class:`Query` as it is (``box`` given to one without a box),
        anything else an image query cropped to ``box``."""
        if isinstance(obj, Query):
            if box is not None and obj.box is None:
                return dataclasses.replace(obj, box=box)
            return obj
        return cls(image=obj, box=box)


def as_queries(queries: Union[QueryLike, Sequence[QueryLike]],
               boxes: Optional[Sequence[Box]] = None) -> List[Query]:
    """A list of :class:`Query`: one query alone or a sequence; ``boxes``: one per query (or None)."""
    if isinstance(queries, (str, Path, Image.Image, Query)) or (isinstance(queries, np.ndarray) and queries.ndim < 4):
        queries = [queries]
    queries = list(queries)
    boxes = list(boxes) if boxes is not None else [None] * len(queries)
    if len(boxes) != len(queries):
        raise DataError(f"{len(boxes)} boxes for {len(queries)} queries: give one box (or None) per query")
    return [Query.of(q, b) for q, b in zip(queries, boxes)]


def _label_of(q: Query, n: int) -> str:
    """How a query that could not be described is named: its label, path, or stored id."""
    if q.label:
        return q.label
    if q.image is not None:
        return image_label(q.image, n)
    if q.id is not None:
        return f"id {q.id}"
    return f"<vector {n}>"


def _reason(e: GemsegError) -> str:
    """The one-line reason of a query's error (an ImageError without its path: the label says it)."""
    return e.reason if isinstance(e, ImageError) else str(e)


class Records(List[Dict[str, Any]]):
    """``[{"query", "hits"}]`` in query order (a plain list), with ``failed``: ``[{"query",
    "reason"}]`` for the queries that could not be searched (``skip_bad``), and ``boxes``: each
    record's query box (or None), for the hit pages."""

    def __init__(self, items: Sequence[Dict[str, Any]] = (), failed: Sequence[Dict[str, str]] = (),
                 boxes: Optional[Sequence[Box]] = None) -> None:
        super().__init__(items)
        self.failed: List[Dict[str, str]] = list(failed)
        self.boxes: List[Box] = list(boxes) if boxes is not None else [None] * len(self)


@dataclass
class Described:
    """Queries as the search sees them: descriptors (Q, D) float32, and per query its label, the
    database image it is (``self_ids``, −1: none), its box and how to get its (cropped) image;
    ``failed``: (label, reason) of each query left out by ``describe(..., skip_bad=True)``."""

    descriptors: np.ndarray
    labels: List[str]
    self_ids: np.ndarray
    boxes: List[Box]
    image_loaders: List[Optional[Callable[[], Image.Image]]]
    images: Dict[int, Image.Image] = field(default_factory=dict)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    errors: List[GemsegError] = field(default_factory=list, repr=False)


@dataclass
class QueryResults:
    """What :meth:`QueryPath.search` returns.

    labels: Q query names; ids: (Q, top) int64 database ids, best first (−1 pads); scores: (Q, top)
    float32; descriptors: (Q, D) float32, the queries as searched (after α-QE, the expanded ones);
    notes: per step, its summary; hit_fields: extra fields of the hit of (query, id); failed:
    (label, reason) of the queries left out (``skip_bad``), not counted in Q; boxes: the Q queries' boxes;
    timings: seconds spent in the index search (``"search"``) and in each step (by its name)."""

    labels: List[str]
    ids: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    paths: Callable[[Sequence[int]], List[str]]
    notes: Dict[str, Any] = field(default_factory=dict)
    hit_fields: Dict[Tuple[int, int], Dict[str, Any]] = field(default_factory=dict)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    boxes: List[Box] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)

    def hits(self, q: int) -> List[Dict[str, Any]]:
        """Query ``q``'s hit records, best first: ``{"rank", "id", "path", "score", "missing"}``
        plus what the steps added."""
        keep = [(float(s), int(i)) for s, i in zip(self.scores[q], self.ids[q]) if i >= 0]
        paths = self.paths([i for _, i in keep]) if keep else []
        out = []
        for r, ((s, i), p) in enumerate(zip(keep, paths)):
            hit = {"rank": r + 1, "id": i, "path": p, "score": s, "missing": not os.path.exists(p)}
            hit.update(self.hit_fields.get((q, i), {}))
            out.append(hit)
        return out

    def records(self) -> Records:
        """``[{"query": label, "hits": [...]}]`` in query order (:class:`Records`: its ``failed``
        lists the queries left out)."""
        return Records([{"query": label, "hits": self.hits(q)} for q, label in enumerate(self.labels)],
                       [{"query": label, "reason": reason} for label, reason in self.failed],
                       self.boxes if len(self.boxes) == len(self.labels) else None)


def query_steps(qe: int = 0, alpha: float = 3.0, coseg: Optional[Any] = None,
                rerank: StepsLike = None) -> List[Reranker]:
    """The steps a tool's flags name, in order: ``qe`` with ``qe`` neighbours and ``alpha`` (the
    ``--qe K --alpha A`` spelling, 0: none), ``coseg`` with the options ``coseg`` (the
    ``--coseg-rerank K`` spelling, None: none), then the ``rerank`` steps (``--rerank``)."""
    steps: List[Reranker] = []
    if qe:
        steps.append(reranker_class("qe")(k=int(qe), alpha=float(alpha)))
    if coseg is not None:
        steps.append(reranker_class("coseg")(coseg))
    return steps + parse_steps(rerank)


class QueryPath:
    """Queries → hits over one index (module docstring).

    Args:
        index: the database.
        net: the model that built it (checked by fingerprint); ``None`` for a path that only takes
            queries by vector or stored id (without a box) and runs no step that needs a network.
        steps: the re-ranking steps, in order (names as the CLI writes them, or
            :class:`~retrieval.search.rerank.step.Reranker` objects).
        device: where forward passes run (default: CUDA when available).
        search_kwargs: the index's search settings (``nprobe``, ``ef_search``, ``rerank``,
            ``rerank_k``) for every search, the steps' included.
        progress: progress bars for long steps.
    """

    def __init__(self, index: ImageIndex, net: Optional[DescriptorNet] = None, steps: StepsLike = None, *,
                 device: Optional[Union[str, torch.device]] = None, search_kwargs: Optional[Dict[str, Any]] = None,
                 progress: bool = False) -> None:
        self.index = index
        self.net = net
        self.steps: List[Reranker] = parse_steps(steps)
        self.device = resolve_device(device) if net is not None else None
        self.search_kwargs = {k: v for k, v in (search_kwargs or {}).items() if v is not None}
        self.progress = progress
        self.fingerprint = net.fingerprint() if net is not None else None
        if net is not None:
            index.check_model(self.fingerprint, net.dim)
        for s in self.steps:
            if s.needs_network and net is None:
                raise DataError(f"re-ranking step '{s.name}' runs the network: open the query path with the model")

    def with_steps(self, steps: StepsLike, search_kwargs: Optional[Dict[str, Any]] = None) -> "QueryPath":
        """The same path (index, network, device: nothing checked again) with other ``steps`` and,
        when given, other ``search_kwargs``: a server makes one per request."""
        other = copy.copy(self)
        other.steps = parse_steps(steps)
        if search_kwargs is not None:
            other.search_kwargs = {k: v for k, v in search_kwargs.items() if v is not None}
        for s in other.steps:
            if s.needs_network and self.net is None:
                raise DataError(f"re-ranking step '{s.name}' runs the network: open the query path with the model")
        return other

    def with_index(self, index: ImageIndex) -> "QueryPath":
        """The same path (network, device, steps) over another ``index`` (a new state of the same
        folder: a server that follows its index), checked against the fingerprint already known."""
        if self.fingerprint is not None and self.net is not None:
            index.check_model(self.fingerprint, self.net.dim)
        other = copy.copy(self)
        other.index = index
        return other

    @property
    def needs_network(self) -> bool:
        """Whether a step runs forward passes."""
        return any(s.needs_network for s in self.steps)

    def needs_forward(self, queries: Sequence[Query]) -> bool:
        """Whether describing ``queries`` runs the network (an image, or a stored id with a box)."""
        return any(q.vector is None and (q.image is not None or q.box is not None) for q in queries)

    # -- 1. describe ---------------------------------------------------------------------------
    def _indexed_image(self, i: int) -> Image.Image:
        return load_image(self.index.paths[i])

    def _check_id(self, i: int) -> int:
        if not 0 <= int(i) < self.index.ntotal:
            raise DataError(f"no indexed image with id {i} (ids are 0 … {self.index.ntotal - 1})")
        removed = self.index.removed_ids
        k = int(np.searchsorted(removed, int(i)))
        if k < removed.size and removed[k] == int(i):
            raise DataError(f"indexed image {i} was removed from the index (re-described or pruned)")
        return int(i)

    def describe(self, queries: Union[QueryLike, Sequence[QueryLike]], skip_bad: bool = False) -> Described:
        """Describe ``queries`` (module docstring, step 1). A bad image raises ImageError; a box
        that is not inside its image (:mod:`retrieval.search.query_box`), an unknown id, a vector
        of the wrong size or with non-finite values a DataError. With ``skip_bad`` such a query is
        left out instead and listed in :attr:`Described.failed` with its reason."""
        qs = as_queries(queries)
        D = self.index.dim
        rows: List[Optional[np.ndarray]] = []
        loaders: List[Optional[Callable[[], Image.Image]]] = []
        labels, self_ids, images, kept, failed, errors = [], [], {}, [], [], []
        for n, q in enumerate(qs):
            try:
                row, loader, label, own, img = self._describe_one(n, q)
            except GemsegError as e:
                if not skip_bad:
                    raise
                failed.append((_label_of(q, n), _reason(e)))
                errors.append(e)
                continue
            m = len(kept)
            kept.append(q)
            rows.append(row)
            loaders.append(loader)
            labels.append(label)
            self_ids.append(own)
            if img is not None:
                images[m] = img
        stored = [m for m, r in enumerate(rows) if r is None and m not in images]
        if stored:
            got = self.index.rows(np.array([kept[m].id for m in stored], np.int64))
            for m, r in zip(stored, got):
                rows[m] = r
        if images and self.net is None:
            raise DataError("a query by image (or by id with a box) needs the descriptor network")
        for m, img in images.items():
            rows[m] = describe_pil(self.net, img, device=self.device)
        Q = np.stack(rows).astype(np.float32) if kept else np.zeros((0, D), np.float32)
        return Described(np.ascontiguousarray(Q), labels, np.asarray(self_ids, np.int64),
                         [q.box for q in kept], loaders, images, failed, errors)

    def _describe_one(self, n: int, q: Query) -> Tuple[Optional[np.ndarray], Optional[Callable[[], Image.Image]],
                                                       str, int, Optional[Image.Image]]:
        """Query ``n``: (its row if given as a vector, its image loader, label, self id (−1: none),
        its cropped image when it is read now); raises the query's error."""
        sid = self._check_id(q.id) if q.id is not None else -1
        own = self._check_id(q.self_id) if q.self_id is not None else -1
        if q.vector is not None:
            v = np.asarray(q.vector, dtype=np.float32).reshape(-1)
            if v.shape[0] != self.index.dim:
                raise ModelMismatchError(f"query vector {n} has {v.shape[0]} values; this index holds "
                                         f"{self.index.dim}-d descriptors")
            if not np.all(np.isfinite(v)) or not np.any(v):
                raise DataError(f"query vector {n} must be finite and not all zeros")
            norm = float(np.linalg.norm(v))
            row = v if abs(norm - 1.0) <= 1e-6 else v / norm  # a stored row stays bit-equal
            return row, None, q.label or f"<vector {n}>", own, None
        if q.image is not None:
            source: Callable[[], Image.Image] = (lambda obj=q.image: as_image(obj))
            label = q.label or image_label(q.image, n)
        else:
            source = (lambda i=sid: self._indexed_image(i))
            label = q.label or self.index.paths[sid]
        loader = (lambda src=source, box=q.box, name=label: crop_to_box(src(), box, name))
        # an image (or a box) is read now: a bad image or box fails before any search
        img = loader() if q.image is not None or q.box is not None else None
        return None, loader, label, own, img

    # -- 2.-4. search, re-rank, hits -------------------------------------------------------------
    def depth(self, top: int) -> int:
        """Hits searched before re-ranking: ``top`` or the deepest step's need."""
        return max([int(top)] + [s.depth() for s in self.steps])

    def search(self, described: Described, top: int = 10) -> QueryResults:
        """Search, re-rank and keep each query's ``top`` (module docstring, steps 2-4)."""
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise DataError(f"top must be ≥ 1, got {top}")
        ctx = RerankContext(described.descriptors.copy(), self.index, self.net, self.device, described.self_ids,
                            described.boxes, described.image_loaders, dict(self.search_kwargs), self.progress)
        ctx._images.update(described.images)
        t0 = time.perf_counter()
        scores, ids = ctx.search(ctx.descriptors, self.depth(top))
        timings = {"search": time.perf_counter() - t0}
        for step in self.steps:
            t0 = time.perf_counter()
            ids, scores = step.rerank(ctx, ids, scores)
            timings[step.name] = timings.get(step.name, 0.0) + time.perf_counter() - t0
        return QueryResults(described.labels, ids[:, :top], scores[:, :top], ctx.descriptors, self._paths,
                            ctx.notes, ctx.hit_fields, list(described.failed), list(described.boxes),
                            timings)

    def run(self, queries: Union[QueryLike, Sequence[QueryLike]], top: int = 10,
            skip_bad: bool = False) -> QueryResults:
        """:meth:`describe` then :meth:`search`; ``skip_bad``: answer the good queries, list the bad
        ones in ``failed``. When none is good, one query raises its own error and several a
        DataError naming the first."""
        described = self.describe(queries, skip_bad=skip_bad)
        if described.failed and not described.labels:
            if len(described.errors) == 1:
                raise described.errors[0]
            label, reason = described.failed[0]
            raise DataError(f"none of the {len(described.failed)} queries could be searched "
                            f"(first: {label}: {reason})")
        return self.search(described, top)

    def _paths(self, ids: Sequence[int]) -> List[str]:
        many = getattr(self.index.paths, "many", None)
        return many(ids) if many is not None else [self.index.paths[i] for i in ids]
