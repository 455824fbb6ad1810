"""What a re-ranking step is: the interface every re-ranker of the query path implements, and the
context it is given.

A step is one method (α-QE, co-segmentation re-ranking, ...) that turns a shortlist into a new
shortlist for a batch of Q queries::

    ids, scores = step.rerank(context, ids, scores)    # (Q, n) int64 (−1 pads), (Q, n) float32

* ``context`` (:class:`RerankContext`) holds the queries (descriptors, images cropped to their
  boxes, the database image a query is, if any), the database (its index: search,
  stored rows, paths), the network and the device; a step may replace the query descriptors
  (α-QE does, so that later steps see the expanded queries), add fields to hit records
  (:meth:`RerankContext.annotate`) and leave a summary (:attr:`RerankContext.notes`).
* A step declares its parameters as a dataclass (:attr:`Reranker.Params`, defaults included; a
  ``validate()`` method, when it has one, raises a one-line :class:`DataError`), how many hits it
  reads (:meth:`Reranker.depth`), and whether it needs the query image or the network
  (:attr:`Reranker.needs_image`, :attr:`Reranker.needs_network`): a query by vector has no image.

Steps are registered by name (:mod:`retrieval.search.rerank.registry`) and run in order by the
query path (:mod:`retrieval.search.query`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np

from retrieval.core.errors import DataError

if TYPE_CHECKING:  # types only: the registry (and ``--help``) reads this module without torch
    import torch
    from PIL import Image

    from retrieval.model.network import DescriptorNet
    from retrieval.search.index import ImageIndex

Box = Optional[Sequence[float]]


@dataclass
class NoParams:
    """The parameters of a step that has none."""


@dataclass
class RerankContext:
    """What a re-ranking step sees of a batch of Q queries.

    descriptors: (Q, D) float32 L2-normalised query descriptors (a step may replace them).
    index: the database searched (:class:`~retrieval.search.index.ImageIndex`: ``search``,
        ``rows``, ``descriptors``, ``paths``).
    net: the descriptor network (``None`` when the path was opened without one: queries by vector
        or by stored id only); device: where its forward passes run.
    self_ids: (Q,) int64, the database image each query is (:attr:`retrieval.search.query.Query.self_id`),
        −1 otherwise (α-QE skips that copy among the neighbours).
    boxes: per query, the box (x1, y1, x2, y2 pixels of the query image) it was cropped to, or None.
    search_kwargs: the index search settings (nprobe, ef_search, rerank) of every search.
    progress: show progress bars for long steps.
    notes: per step name, a JSON-able summary the step leaves (e.g. co-segmentation fallbacks).
    objects: per ``(query, K, k)``, the query's object as co-segmentation with its top K hits and
        k factors found it (a (h, w) float32 mask in [0, 1] over the query image, or None when it
        fell back): left by the ``coseg`` step, read (or made) by ``sv:region=object``.
    """

    descriptors: np.ndarray
    index: ImageIndex
    net: Optional[DescriptorNet]
    device: Optional[torch.device]
    self_ids: np.ndarray
    boxes: List[Box]
    image_loaders: List[Optional[Callable[[], Image.Image]]]
    search_kwargs: Dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    notes: Dict[str, Any] = field(default_factory=dict)
    hit_fields: Dict[Tuple[int, int], Dict[str, Any]] = field(default_factory=dict)
    objects: Dict[Tuple[int, int, int], Any] = field(default_factory=dict)
    _images: Dict[int, Image.Image] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return int(self.descriptors.shape[0])

    def image(self, q: int) -> Image.Image:
        """Query ``q``'s RGB image, cropped to its box (loaded once). A query by vector has none: a
        one-line :class:`DataError`."""
        if q not in self._images:
            load = self.image_loaders[q]
            if load is None:
                raise DataError(f"query {q} is a vector: a re-ranking step that reads the query image "
                                "needs a query image or a stored id")
            self._images[q] = load()
        return self._images[q]

    def images(self) -> List[Image.Image]:
        """Every query's image (:meth:`image`), in query order."""
        return [self.image(q) for q in range(self.n_queries)]

    def search(self, vectors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The index's top ``k`` for ``vectors`` (Q, D) float32 with the path's search settings:
        scores (Q, k) float32, ids (Q, k) int64 (−1 pads)."""
        return self.index.search(vectors, k, **self.search_kwargs)

    def annotate(self, q: int, i: int, **fields: Any) -> None:
        """Add ``fields`` to the hit record of database id ``i`` for query ``q``."""
        self.hit_fields.setdefault((int(q), int(i)), {}).update(fields)


class Reranker:
    """One re-ranking step (module docstring). Subclasses set :attr:`name` and :attr:`Params`,
    and implement :meth:`rerank`; they are registered with
    :func:`retrieval.search.rerank.registry.register_reranker`."""

    #: The name the CLI, the API and the evaluation know the step by (its module's name).
    name: ClassVar[str] = ""
    #: One line for ``--help``.
    summary: ClassVar[str] = ""
    #: The parameters: a dataclass whose fields (with defaults) are what ``name:key=value`` sets.
    Params: ClassVar[Type[Any]] = NoParams
    #: Reads the query images (a query by vector cannot be re-ranked by it).
    needs_image: ClassVar[bool] = False
    #: Runs forward passes of the network.
    needs_network: ClassVar[bool] = False

    def __init__(self, params: Optional[Any] = None, **values: Any) -> None:
        if params is not None and values:
            raise TypeError("give the parameters as one Params object or as keywords, not both")
        self.params = params if params is not None else self.Params(**values)
        validate = getattr(self.params, "validate", None)
        if callable(validate):
            validate()

    def depth(self) -> int:
        """How many hits of each query's shortlist the step reads (0: whatever it is given)."""
        return 0

    def rerank(self, ctx: RerankContext, ids: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """New shortlist from ``ids`` (Q, n) int64 (−1 pads) and ``scores`` (Q, n) float32, best
        first: returns (ids, scores) of the same kind."""
        raise NotImplementedError

    def spec(self) -> str:
        """The step written as the CLI takes it: ``name`` or ``name:key=value:...`` (values that
        differ from the defaults)."""
        defaults = self.Params()
        changed = [f"{f.name}={getattr(self.params, f.name)}" for f in dataclasses.fields(self.params)
                   if getattr(self.params, f.name) != getattr(defaults, f.name)]
        return ":".join([self.name] + changed)

    def __repr__(self) -> str:
        return f"<re-ranker {self.spec()}>"
