"""The search service behind the HTTP API: one index and its model, loaded once, shared by every
request.

* **Search** (:meth:`SearchService.search`): through the query path
  (:class:`~retrieval.search.query.QueryPath`), as ``tools/search.py`` and the evaluation: an
  upload is cropped to its box and described; an indexed image is its stored descriptor (no
  forward pass; with a box its file is read, cropped and described); then the index's own search
  and the re-ranking steps asked for (``rerank``, and ``qe`` / ``alpha``), so the hits equal
  ``tools/search.py``'s.
* **Concurrency**: forward passes run in a bounded thread pool (``forward_workers``, one on a GPU:
  forward passes are serialised there); faiss searches run concurrently in the callers' threads
  (faiss CPU search only reads the index). On an approximate index, a search that sets its own
  ``nprobe`` runs alone and restores the default afterwards, so concurrent searches never see
  another request's setting.
* **Files**: only the index folder and the images it lists are ever read; an id is an index
  position (``0 … N-1``) and nothing else is looked up.
* **Memory** stays flat: thumbnails are kept in a bounded LRU cache; nothing else is kept per request.
"""
from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from cosegment import activations
from cosegment.render import heat_overlay
from cosegment.segmentation import PreparedSet, segment_set
from retrieval.core.backbone import default_image_size, default_layer, resolve_device
from retrieval.core.errors import ImageError
from retrieval.core.images import load_image, resize_long_side, to_tensor, upright_size
from retrieval.loading import search_model
from retrieval.model.network import DescriptorNet
from retrieval.search.index import ImageIndex, is_exact
from retrieval.search.query import Query, QueryPath, query_steps
from retrieval.serve.errors import BadParameterError, NotFoundError

PathLike = Union[str, Path]

#: Largest ``top`` a search may ask for, largest thumbnail side, most images per co-segmentation.
MAX_TOP = 1000
THUMB_SIZES = (16, 1024)
MAX_COSEG_IMAGES = 12
MAX_COSEG_K = 8
#: Long side of the co-segmentation pictures sent back.
COSEG_DISPLAY = 320


class _Gate:
    """Many searches at once, or one that changes the index's search parameters alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def png_data_url(a: np.ndarray) -> str:
    """(H, W, 3) or (H, W) uint8 → ``data:image/png;base64,…``."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class SearchService:
    """An index and the model that built it, ready to answer searches.

    Args:
        index: the loaded index.
        net: its model (see :func:`retrieval.loading.search_model`).
        device: where forward passes run (default: CUDA when available).
        forward_workers: forward passes at once on the CPU (a GPU always runs one at a time).
        thumb_cache: thumbnails kept in memory (LRU).
        model_name: what ``info()`` says the model is.
        coseg_size: long side of co-segmentation's network input (default: the backbone's
            co-segmentation size, :func:`retrieval.core.backbone.default_image_size`).
    """

    def __init__(self, index: ImageIndex, net: DescriptorNet, *, device: Optional[str] = None,
                 forward_workers: int = 1, thumb_cache: int = 512, model_name: Optional[str] = None,
                 coseg_size: Optional[int] = None) -> None:
        self.index = index
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.fingerprint = net.fingerprint()
        index.check_model(self.fingerprint, net.dim)
        self.model_name = model_name or f"{net.config.backbone} {net.config.pooling}"
        workers = 1 if self.device.type == "cuda" else max(1, int(forward_workers))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gemseg-forward")
        self._gate = _Gate()
        self._exact = is_exact(index.factory)
        self._nprobe = None if self._exact else index.nprobe
        self.path = QueryPath(index, self.net, device=self.device)
        self.thumbnail = lru_cache(maxsize=thumb_cache)(self._thumbnail)
        self.coseg_size = int(coseg_size or default_image_size(net.backbone.name))

    @classmethod
    def open(cls, index_dir: PathLike, model: Optional[PathLike] = None, concepts: Optional[PathLike] = None,
             **kwargs: Any) -> "SearchService":
        """Load the index folder ``index_dir`` and its model (or ``model``, a checkpoint or YAML),
        pooling with ``concepts`` (default: the concept file the index records, if any)."""
        index = ImageIndex.load(index_dir)
        net = search_model(index, model, concepts)
        name = str(model) if model else (index.model_source or None)
        return cls(index, net, model_name=name, **kwargs)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- what is served ------------------------------------------------------------------------
    def info(self) -> Dict[str, Any]:
        """``{"images", "dim", "factory", "fingerprint", "model", "device"}``."""
        return {"images": self.index.ntotal, "dim": self.index.dim, "factory": self.index.factory,
                "fingerprint": self.fingerprint, "model": self.model_name, "device": str(self.device)}

    def image_id(self, text: Union[str, int]) -> int:
        """The index position named by ``text`` (decimal digits only, ``0 … N-1``).

        Raises:
            NotFoundError: anything else (a path, a name, a negative or too large number).
        """
        s = str(text)
        if not (s.isascii() and s.isdigit()) or len(s) > 12 or int(s) >= self.index.ntotal:
            raise NotFoundError(f"no indexed image with id '{s[:40]}' (ids are 0 … {self.index.ntotal - 1})")
        return int(s)

    def indexed_image(self, i: int, max_side: Optional[int] = None) -> Image.Image:
        """Indexed image ``i`` read from its file (:class:`NotFoundError` if it is gone or unreadable)."""
        try:
            return load_image(self.index.paths[i], max_side=max_side)
        except ImageError as e:
            raise NotFoundError(f"indexed image {i} can no longer be read: {e.reason}") from None

    def _thumbnail(self, i: int, size: int) -> bytes:
        img = self.indexed_image(i, max_side=size)
        if max(img.size) > size:
            img = resize_long_side(img, size)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    # -- search --------------------------------------------------------------------------------
    def _forward(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in the bounded forward pool and wait for it."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def search(self, query: Query, *, top: int = 10, qe: int = 0, alpha: float = 3.0,
               nprobe: Optional[int] = None, rerank: Optional[str] = None) -> Dict[str, Any]:
        """Search with ``query`` (an upload as ``Query(image=RGB image, box=..., label=name)``, an
        indexed image as ``Query(id=i, box=...)``; boxes in pixels of the image, checked by the
        caller) through the query path, re-ranked by α-QE with ``qe`` neighbours (``alpha``) and
        then the ``rerank`` steps (``"qe:k=2,coseg:K=20"``).

        Returns ``{"query", "query_id", "size": [W, H] (None when an indexed file is gone),
        "box", "rerank": [steps], "hits": [{"rank", "id", "path", "score", "missing"}], "ms"}``;
        hits best first, scores are inner products (float).

        Raises:
            BadParameterError: top outside 1 … MAX_TOP, qe or alpha < 0, nprobe < 1.
            DataError: an unknown re-ranker or parameter, a step that cannot run on this query.
        """
        t0 = time.perf_counter()
        if not 1 <= top <= MAX_TOP:
            raise BadParameterError(f"top must be 1 … {MAX_TOP}, got {top}")
        if qe < 0 or alpha < 0 or not np.isfinite(alpha):
            raise BadParameterError(f"qe and alpha must be ≥ 0, got qe={qe}, alpha={alpha}")
        if nprobe is not None and nprobe < 1:
            raise BadParameterError(f"nprobe must be ≥ 1, got {nprobe}")
        own = nprobe is not None and self._nprobe is not None and nprobe != self._nprobe
        path = self.path.with_steps(query_steps(qe, alpha, None, rerank),
                                    search_kwargs={"nprobe": nprobe if own else self._nprobe})
        described = self._forward(path.describe, [query]) if path.needs_forward([query]) else path.describe([query])
        with (self._gate.exclusive() if own else self._gate.shared()):
            try:
                res = self._forward(path.search, described, top) if path.needs_network else path.search(described, top)
            finally:
                if own:
                    self.index.search(described.descriptors[:1], 1, nprobe=self._nprobe)  # restores the default
        size = self._size(query)
        return {"query": res.labels[0], "query_id": query.id, "size": None if size is None else list(size),
                "box": None if query.box is None else list(query.box), "rerank": [st.spec() for st in path.steps],
                "hits": res.hits(0), "ms": round((time.perf_counter() - t0) * 1000, 2)}

    def _size(self, query: Query) -> Optional[Tuple[int, int]]:
        if query.image is not None:
            return query.image.size if isinstance(query.image, Image.Image) else None
        try:
            return self.indexed_size(int(query.id))  # type: ignore[arg-type]
        except NotFoundError:
            return None

    def indexed_size(self, i: int) -> Tuple[int, int]:
        """(W, H) of indexed image ``i`` as it is shown upright, from its file's header (no decode;
        :class:`NotFoundError` if the file is gone or unreadable)."""
        try:
            return upright_size(self.index.paths[i])
        except ImageError as e:
            raise NotFoundError(f"indexed image {i} can no longer be read: {e.reason}") from None

    # -- co-segmentation ------------------------------------------------------------------------
    def cosegment(self, images: Sequence[Tuple[Optional[int], str, Image.Image]], k: int = 3) -> Dict[str, Any]:
        """Deep Feature Factorization over ``images`` = ``[(id or None, name, RGB image)]`` with
        ``k`` concepts at the model backbone's co-segmentation layer: what the query and its hits
        share. Returns ``{"k", "layer", "object_factors", "images": [{"id", "name", "overlay",
        "mask", "box"}], "ms"}`` with ``overlay`` (concept heat maps, one colour per concept) and
        ``mask`` (the object, 0/255) as PNG data URLs, long side ≤ COSEG_DISPLAY.

        Raises:
            BadParameterError: no images, more than MAX_COSEG_IMAGES, k outside 1 … MAX_COSEG_K.
            DataError: k larger than the activations allow.
        """
        t0 = time.perf_counter()
        if not 1 <= len(images) <= MAX_COSEG_IMAGES:
            raise BadParameterError(f"co-segmentation takes 1 … {MAX_COSEG_IMAGES} images, got {len(images)}")
        if not 1 <= k <= MAX_COSEG_K:
            raise BadParameterError(f"k must be 1 … {MAX_COSEG_K}, got {k}")
        bb = self.net.backbone
        layer = default_layer(bb.name) or bb.layer_names()[-1]
        size = self.coseg_size
        shown = [resize_long_side(img, min(COSEG_DISPLAY, max(img.size))) for _, _, img in images]
        tensors = [to_tensor(resize_long_side(img, size), bb.mean, bb.std) for _, _, img in images]

        def run() -> Any:
            acts = activations.extract_activations(bb, tensors, layer, device=self.device)
            prep = PreparedSet("query", [Path(name) for _, name, _ in images],
                               [(s.height, s.width) for s in shown], acts)
            return segment_set(prep, k, device=self.device)

        res = self._forward(run)
        out: List[Dict[str, Any]] = []
        for (i, name, _), s, heat, mask, bx in zip(images, shown, res.heat, res.masks, res.boxes):
            out.append({"id": i, "name": name, "overlay": png_data_url(heat_overlay(np.asarray(s), heat)),
                        "mask": png_data_url((mask * 255).astype(np.uint8)),
                        "box": None if bx is None else [int(v) for v in bx]})
        return {"k": k, "layer": layer, "object_factors": list(res.object_factors), "images": out,
                "ms": round((time.perf_counter() - t0) * 1000, 2)}
