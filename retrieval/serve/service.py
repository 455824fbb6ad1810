"""The search service behind the HTTP API: one index folder and its model, loaded once, shared by
every request; the index followed as other processes change it.

* **Search** (:meth:`SearchService.search`): through the query path
  (:class:`~retrieval.search.query.QueryPath`), as ``tools/search.py`` and the evaluation: an
  upload is cropped to its box and described; an indexed image is its stored descriptor (no
  forward pass; with a box its file is read, cropped and described); a vector ((D,) float, e.g.
  computed by the client with the same model) is searched as it is; then the index's own search
  and the re-ranking steps asked for (``rerank``, and ``qe`` / ``alpha``), so the hits equal
  ``tools/search.py``'s.
* **A live index** (:class:`IndexState`, :meth:`SearchService.reload`): a watcher thread looks at
  the index folder every ``reload_interval`` seconds (``stat`` of the folder, ``paths.sqlite`` and
  ``meta.json``: the path store's transaction is the folder's commit point); when they changed it
  opens the folder again, checks it against the model and swaps the new state in with one
  assignment. A request takes the state once, at its start, and finishes on it (the old state
  stays open until its last request lets it go); a folder that cannot be read (half written, being
  renamed, made by another model) leaves the server on the state it has, and is tried again at
  the next change. :attr:`IndexState.commit` names the state served.
* **Concurrency**: concurrent searches by id or vector share one pass over the database
  (:mod:`~retrieval.serve.batching`); forward passes run in a bounded thread pool (``forward_workers``, one on a GPU:
  forward passes are serialised there); faiss searches run concurrently in the callers' threads
  (faiss CPU search only reads the index). On an approximate index, a search that sets its own
  ``nprobe`` runs alone and restores the default afterwards, so concurrent searches never see
  another request's setting.
* **Quick searches on the event loop**: a search by id or vector with no box, no re-ranking, no
  α-QE and no ``nprobe`` of its own, on a state whose search is quick (:attr:`IndexState.quick`:
  an approximate index, or an exact one of at most :data:`INLINE_EXACT_FLOATS` stored values,
  and its searches so far under :data:`INLINE_SEARCH_MS` on average), is answered in the server's
  event-loop thread (``search(..., batch=False)``): a hop to a worker thread and back cost more
  than such a search (``benchmarks/bench_serve.py``; docs/serve.md "Under load"). Everything else
  runs in the worker threads, batched.
* **Files**: only the index folder and the images it lists are ever read; an id is an index
  position (``0 … N-1``, not removed) and nothing else is looked up.
* **Memory** stays flat: thumbnails are kept in a bounded LRU cache per state; nothing else is
  kept per request.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from cosegment import activations
from cosegment.render import heat_overlay, palette
from cosegment.segmentation import PreparedSet, segment_set
from retrieval.core.backbone import default_image_size, default_layer, resolve_device
from retrieval.core.errors import GemsegError, ImageError, first_line
from retrieval.core.images import load_image, resize_long_side, to_tensor, upright_size
from retrieval.loading import search_model
from retrieval.model.network import DescriptorNet
from retrieval.search.index import ImageIndex, is_exact
from retrieval.search.query import Query, QueryPath, query_steps
from retrieval.serve.batching import SearchBatcher
from retrieval.serve.errors import BadParameterError, NotFoundError

PathLike = Union[str, Path]

#: Largest ``top`` a search may ask for, largest thumbnail side, most images per co-segmentation.
MAX_TOP = 1000
THUMB_SIZES = (16, 1024)
MAX_COSEG_IMAGES = 12
MAX_COSEG_K = 8
#: Long side of the co-segmentation pictures sent back.
COSEG_DISPLAY = 320
#: Files whose ``stat`` tells that an index folder changed (the store's transaction commits it).
WATCHED = ("paths.sqlite", "meta.json")


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


def jpeg_data_url(img: Image.Image, max_side: int = 640) -> str:
    """An RGB image, long side at most ``max_side``, → ``data:image/jpeg;base64,…``."""
    if max(img.size) > max_side:
        img = resize_long_side(img, max_side)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def folder_signature(folder: Path) -> Optional[Tuple[Tuple[int, int, int, int], ...]]:
    """(device, inode, size, mtime_ns) of the folder and of its :data:`WATCHED` files, or None
    while one of them is missing (a folder being renamed over)."""
    try:
        stats = [os.stat(folder)] + [os.stat(folder / name) for name in WATCHED]
    except OSError:
        return None
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def commit_of(index: ImageIndex, store_inode: int) -> str:
    """12 hex digits naming an index state: its rows, its removed ids, its factory and model, and
    the path store file it was read from (a rebuilt or compacted folder is a new file)."""
    h = hashlib.sha1()
    h.update(f"{index.ntotal}|{index.factory}|{index.fingerprint}|{store_inode}|".encode())
    h.update(np.ascontiguousarray(index.removed_ids, dtype=np.int64).tobytes())
    return h.hexdigest()[:12]


#: The types of the numbers JSON decodes to (bool is not one: ``type(True)`` is ``bool``).
_JSON_NUMBERS = {int, float}
#: An exact index of at most this many stored values (N × D; 2²² float32 = 16 MiB) searches quickly.
INLINE_EXACT_FLOATS = 1 << 22
#: A state's searches answered in the event loop must stay under this many ms on average (EWMA).
INLINE_SEARCH_MS = 5.0


class IndexState:
    """One opened state of the index folder: the index, the query path over it, its commit and
    its thumbnails. Never changed once made: a new commit of the folder is a new state."""

    def __init__(self, index: ImageIndex, path: QueryPath, signature: Optional[Tuple[Any, ...]],
                 thumb_cache: int) -> None:
        self.index = index
        self.path = path
        self.signature = signature
        store_inode = signature[1][1] if signature else 0
        self.commit = commit_of(index, store_inode)
        self.exact = is_exact(index.factory)
        self.nprobe = None if self.exact else index.nprobe
        self.gate = _Gate()
        self.loaded_at = time.time()
        self._quick_kind = not self.exact or index.ntotal * index.dim <= INLINE_EXACT_FLOATS
        self.search_ms = 0.0  # moving average of this state's plain searches (ms)
        self._thumbs = lru_cache(maxsize=thumb_cache)(self._thumbnail)

    @property
    def quick(self) -> bool:
        """Whether a plain search (by id or vector, no re-ranking) of this state is quick enough to
        answer in the event loop (module doc): an approximate index or a small exact one, whose
        plain searches have averaged under :data:`INLINE_SEARCH_MS`."""
        return self._quick_kind and self.search_ms < INLINE_SEARCH_MS

    def observe_search(self, ms: float) -> None:
        """Add one plain search's time (ms) to the moving average :attr:`quick` reads."""
        self.search_ms += 0.1 * (float(ms) - self.search_ms)

    def is_removed(self, i: int) -> bool:
        removed = self.index.removed_ids
        k = int(np.searchsorted(removed, int(i)))
        return k < removed.size and int(removed[k]) == int(i)

    def thumbnail(self, i: int, size: int) -> bytes:
        """JPEG of indexed image ``i``, long side ``size`` (never enlarged); cached by the file's
        size and mtime, so a changed file is read again and a vanished one is not found."""
        try:
            st = os.stat(self.index.paths[i])
        except OSError:
            raise NotFoundError(f"indexed image {i} can no longer be read: file missing") from None
        return self._thumbs(i, size, st.st_size, st.st_mtime_ns)

    def _thumbnail(self, i: int, size: int, _bytes: int, _mtime: int) -> bytes:
        try:
            img = load_image(self.index.paths[i], max_side=size)
        except ImageError as e:
            raise NotFoundError(f"indexed image {i} can no longer be read: {e.reason}") from None
        if max(img.size) > size:
            img = resize_long_side(img, size)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()


class SearchService:
    """An index folder and the model that built it, ready to answer searches.

    Args:
        index: the loaded index (its folder is followed when it has one and ``reload_interval`` > 0).
        net: its model (see :func:`retrieval.loading.search_model`).
        device: where forward passes run (default: CUDA when available).
        forward_workers: forward passes at once on the CPU (a GPU always runs one at a time).
        thumb_cache: thumbnails kept in memory (LRU, per state).
        model_name: what ``info()`` says the model is.
        coseg_size: long side of co-segmentation's network input (default: the backbone's
            co-segmentation size, :func:`retrieval.core.backbone.default_image_size`).
        reload_interval: seconds between looks at the index folder (0: never reload).
        on_reload: told ``(ok, commit or error line)`` after each attempt to open a new state.
        batch_searches: concurrent searches by id or vector without re-ranking steps share one
            search (:mod:`retrieval.serve.batching`).
    """

    def __init__(self, index: ImageIndex, net: DescriptorNet, *, device: Optional[str] = None,
                 forward_workers: int = 1, thumb_cache: int = 512, model_name: Optional[str] = None,
                 coseg_size: Optional[int] = None, reload_interval: float = 1.0,
                 on_reload: Optional[Callable[[bool, str], None]] = None, batch_searches: bool = True) -> None:
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.fingerprint = net.fingerprint()
        index.check_model(self.fingerprint, net.dim)
        self.model_name = model_name or f"{net.config.backbone} {net.config.pooling}"
        workers = 1 if self.device.type == "cuda" else max(1, int(forward_workers))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gemseg-forward")
        self._thumb_cache = thumb_cache
        self.folder: Optional[Path] = getattr(index, "_folder", None)
        self._base_path = QueryPath(index, self.net, device=self.device)
        self._state = IndexState(index, self._base_path, folder_signature(self.folder) if self.folder else None,
                                 thumb_cache)
        self.coseg_size = int(coseg_size or default_image_size(net.backbone.name))
        self._batcher: Optional[SearchBatcher] = SearchBatcher() if batch_searches else None
        self.on_reload = on_reload
        self.reloads = {"ok": 0, "failed": 0}
        self.last_reload_error: Optional[str] = None
        self._reload_lock = threading.Lock()
        self._failed_signature: Optional[Tuple[Any, ...]] = None
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        if self.folder is not None and reload_interval > 0:
            self._watcher = threading.Thread(target=self._watch, args=(float(reload_interval),),
                                             name="gemseg-index-watch", daemon=True)
            self._watcher.start()

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
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the live index --------------------------------------------------------------------------
    @property
    def state(self) -> IndexState:
        """The state served now (take it once per request)."""
        return self._state

    @property
    def index(self) -> ImageIndex:
        """The index of the state served now."""
        return self._state.index

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.reload()
            except Exception as e:  # noqa: BLE001 - the watcher never dies; the reason is reported
                self._report(False, f"reload failed: {type(e).__name__}: {first_line(e)}")

    def _report(self, ok: bool, line: str) -> None:
        self.reloads["ok" if ok else "failed"] += 1
        if not ok:
            self.last_reload_error = line
        if self.on_reload is not None:
            self.on_reload(ok, line)

    def reload(self) -> bool:
        """Open the folder again if it changed since the state served was read; swap the new state
        in when it is readable and made by this model. True when a new state is served."""
        if self.folder is None:
            return False
        with self._reload_lock:
            cur = self._state
            sig = folder_signature(self.folder)
            if sig is None or sig == cur.signature or sig == self._failed_signature:
                return False
            try:
                index = ImageIndex.load(self.folder)
                path = self._base_path.with_index(index)
            except GemsegError as e:
                self._failed_signature = sig if folder_signature(self.folder) == sig else None
                self._report(False, f"index {self.folder} not reloaded (still serving {cur.commit}): {first_line(e)}")
                return False
            if folder_signature(self.folder) != sig:  # changed while it was read: read it again next time
                index.close()
                return False
            new = IndexState(index, path, sig, self._thumb_cache)
            if new.commit == cur.commit:
                cur.signature = sig  # the same rows (e.g. a write interrupted before its commit)
                index.close()
                return False
            self._state = new  # one assignment: requests started before keep the old state
            self._failed_signature = None
            self._report(True, f"index {self.folder}: now serving {new.commit} ({index.ntotal} images, "
                               f"{index.n_live} live)")
            return True

    # -- what is served ------------------------------------------------------------------------
    def info(self) -> Dict[str, Any]:
        """``{"images", "live_images", "dim", "factory", "fingerprint", "model", "device",
        "commit", "loaded_at", "reloads"}``."""
        st = self._state
        return {"images": st.index.ntotal, "live_images": st.index.n_live, "dim": st.index.dim,
                "factory": st.index.factory, "fingerprint": self.fingerprint, "model": self.model_name,
                "device": str(self.device), "commit": st.commit, "loaded_at": round(st.loaded_at, 3),
                "reloads": dict(self.reloads)}

    def image_id(self, text: Union[str, int], state: Optional[IndexState] = None) -> int:
        """The index position named by ``text`` (decimal digits only, ``0 … N-1``, not removed).

        Raises:
            NotFoundError: anything else (a path, a name, a negative or too large number, a
                removed image).
        """
        st = state or self._state
        s = str(text)
        n = st.index.ntotal
        if not (s.isascii() and s.isdigit()) or len(s) > 12 or int(s) >= n:
            raise NotFoundError(f"no indexed image with id '{s[:40]}' (ids are 0 … {n - 1})")
        if st.is_removed(int(s)):
            raise NotFoundError(f"indexed image {s} was removed from the index (pruned or described again)")
        return int(s)

    def indexed_image(self, i: int, max_side: Optional[int] = None, state: Optional[IndexState] = None) -> Image.Image:
        """Indexed image ``i`` read from its file (:class:`NotFoundError` if it is gone or unreadable)."""
        st = state or self._state
        try:
            return load_image(st.index.paths[i], max_side=max_side)
        except ImageError as e:
            raise NotFoundError(f"indexed image {i} can no longer be read: {e.reason}") from None

    def thumbnail(self, i: int, size: int, state: Optional[IndexState] = None) -> bytes:
        """JPEG of indexed image ``i`` (:meth:`IndexState.thumbnail`)."""
        return (state or self._state).thumbnail(i, size)

    def indexed_size(self, i: int, state: Optional[IndexState] = None) -> Tuple[int, int]:
        """(W, H) of indexed image ``i`` as it is shown upright, from its file's header (no decode;
        :class:`NotFoundError` if the file is gone or unreadable)."""
        st = state or self._state
        try:
            return upright_size(st.index.paths[i])
        except ImageError as e:
            raise NotFoundError(f"indexed image {i} can no longer be read: {e.reason}") from None

    # -- search --------------------------------------------------------------------------------
    def _forward(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in the bounded forward pool and wait for it."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def check_vector(self, values: Any, state: Optional[IndexState] = None) -> np.ndarray:
        """A query vector sent by a client → (D,) float32.

        Raises:
            BadParameterError: not a flat list of numbers, not D of them, a non-finite value, all zeros.
        """
        D = (state or self._state).index.dim
        if not isinstance(values, (list, tuple)) or not (set(map(type, values)) <= _JSON_NUMBERS or all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise BadParameterError(f"vector must be a list of {D} numbers")
        if len(values) != D:
            raise BadParameterError(f"vector has {len(values)} values; this index holds {D}-d descriptors")
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)) or np.any(np.abs(v) > np.finfo(np.float32).max):
            raise BadParameterError("vector values must be finite numbers (no NaN or infinity)")
        if not np.any(v):
            raise BadParameterError("vector is all zeros: it has no direction to search")
        return v.astype(np.float32)

    def search(self, query: Query, *, top: int = 10, qe: int = 0, alpha: float = 3.0,
               nprobe: Optional[int] = None, rerank: Optional[str] = None, return_vectors: bool = False,
               state: Optional[IndexState] = None, batch: bool = True) -> Dict[str, Any]:
        """Search with ``query`` (an upload as ``Query(image=RGB image, box=..., label=name)``, an
        indexed image as ``Query(id=i, box=...)``, a vector as ``Query(vector=v)`` (checked by
        :meth:`check_vector`); boxes in pixels of the image, checked by the caller) through the
        query path of ``state`` (default: the one served now), re-ranked by α-QE with ``qe``
        neighbours (``alpha``) and then the ``rerank`` steps (``"qe:k=2,coseg:K=20"``).

        Returns ``{"query", "query_id", "size": [W, H] (None for a vector or when an indexed file
        is gone), "box", "rerank": [steps], "hits": [{"rank", "id", "path", "score", "missing",
        ...fields the steps add}], "commit", "stages": {stage: ms}, "batch", "ms"}``; hits best first,
        a hit with verified ``matches`` also carries its ``size`` [W, H]; ``batch``: how many
        concurrent queries shared its search (:mod:`retrieval.serve.batching`);
        scores are inner products (float). ``batch``: share one search with concurrent ones
        (False: search alone, never waiting for a batch). ``return_vectors``: also ``"query_vector"`` (the
        query's descriptor, (D,) floats, before any expansion) and each hit's ``"vector"`` (its
        stored row).

        Raises:
            BadParameterError: top outside 1 … MAX_TOP, qe or alpha < 0, nprobe < 1.
            DataError: an unknown re-ranker or parameter, a step that cannot run on this query.
        """
        t0 = time.perf_counter()
        st = state or self._state
        if isinstance(top, bool) or not 1 <= top <= MAX_TOP:
            raise BadParameterError(f"top must be 1 … {MAX_TOP}, got {top}")
        if qe < 0 or alpha < 0 or not np.isfinite(alpha):
            raise BadParameterError(f"qe and alpha must be ≥ 0, got qe={qe}, alpha={alpha}")
        if nprobe is not None and nprobe < 1:
            raise BadParameterError(f"nprobe must be ≥ 1, got {nprobe}")
        if query.id is not None and st.is_removed(int(query.id)):
            raise NotFoundError(f"indexed image {query.id} was removed from the index (pruned or described again)")
        own = nprobe is not None and st.nprobe is not None and nprobe != st.nprobe
        path = st.path.with_steps(query_steps(qe, alpha, None, rerank),
                                  search_kwargs={"nprobe": nprobe if own else st.nprobe})
        stages: Dict[str, float] = {}
        t1 = time.perf_counter()
        forward = path.needs_forward([query])
        described = self._forward(path.describe, [query]) if forward else path.describe([query])
        stages["forward" if forward else "lookup"] = time.perf_counter() - t1
        row, batched = 0, 1
        with (st.gate.exclusive() if own else st.gate.shared()):
            try:
                if path.needs_network:
                    res = self._forward(path.search, described, top)
                elif batch and self._batcher is not None and not path.steps and not described.images and not own:
                    key = (id(st), top, tuple(sorted(path.search_kwargs.items())))
                    res, row, batched = self._batcher.search(key, described, lambda d: path.search(d, top))
                else:
                    res = path.search(described, top)
            finally:
                if own:
                    st.index.search(described.descriptors[:1], 1, nprobe=st.nprobe)  # restores the default
        for name, sec in res.timings.items():
            stages[name if name == "search" else f"rerank:{name}"] = sec
        if not path.steps and not forward and "search" in stages:
            st.observe_search(stages["search"] * 1000 / batched)
        hits = res.hits(row)
        for h in hits:  # verified matches ([xq, yq, xh, yh] in each image's pixels): the hit's size to draw them
            if "matches" in h:
                h["matches"] = np.asarray(h["matches"], dtype=np.float64).reshape(-1, 4).round(2).tolist()
                try:
                    h.setdefault("size", list(self.indexed_size(int(h["id"]), st)))
                except NotFoundError:
                    h.setdefault("size", None)
        out: Dict[str, Any] = {"query": res.labels[row], "query_id": query.id}
        if return_vectors:
            out["query_vector"] = [float(x) for x in described.descriptors[0]]
            rows = st.index.rows(np.array([h["id"] for h in hits], np.int64)) if hits else []
            for h, r in zip(hits, rows):
                h["vector"] = [float(x) for x in r]
        size = self._size(query, st)
        out.update({"size": None if size is None else list(size),
                    "box": None if query.box is None else list(query.box), "rerank": [s.spec() for s in path.steps],
                    "hits": hits, "commit": st.commit, "batch": batched,
                    "stages": {k: round(v * 1000, 3) for k, v in stages.items()},
                    "ms": round((time.perf_counter() - t0) * 1000, 2)})
        return out

    def _size(self, query: Query, state: IndexState) -> Optional[Tuple[int, int]]:
        if query.image is not None:
            return query.image.size if isinstance(query.image, Image.Image) else None
        if query.id is None:
            return None
        try:
            return self.indexed_size(int(query.id), state)
        except NotFoundError:
            return None

    # -- co-segmentation ------------------------------------------------------------------------
    def cosegment(self, images: Sequence[Tuple[Optional[int], str, Image.Image]], k: int = 3) -> Dict[str, Any]:
        """Deep Feature Factorization over ``images`` = ``[(id or None, name, RGB image)]`` with
        ``k`` concepts at the model backbone's co-segmentation layer: what the query and its hits
        share. Returns ``{"k", "layer", "object_factors", "colours", "images": [{"id", "name",
        "size", "overlay", "mask", "box"}], "ms"}`` with ``overlay`` (concept heat maps, factor j in
        ``colours[j]``, ``"#rrggbb"``) and ``mask`` (the object, 0/255) as PNG data URLs, long side
        ≤ COSEG_DISPLAY; ``box`` (x1, y1, x2, y2; x2, y2 exclusive) and ``size`` (W, H) are in the
        pixels of the image itself (as ``/api/search``'s boxes and ``tools/coseg.py``'s boxes.json),
        not of the overlay.

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
        for (i, name, img), s, heat, mask, bx in zip(images, shown, res.heat, res.masks, res.boxes):
            out.append({"id": i, "name": name, "size": list(img.size),
                        "overlay": png_data_url(heat_overlay(np.asarray(s), heat)),
                        "mask": png_data_url((mask * 255).astype(np.uint8)),
                        "box": None if bx is None else image_box(bx, s.size, img.size)})
        colours = ["#%02x%02x%02x" % tuple(int(c) for c in rgb) for rgb in palette(k)]
        return {"k": k, "layer": layer, "object_factors": [int(j) for j in res.object_factors], "colours": colours,
                "images": out, "ms": round((time.perf_counter() - t0) * 1000, 2)}


def image_box(box: Sequence[int], shown: Tuple[int, int], size: Tuple[int, int]) -> List[int]:
    """A box (x1, y1, x2, y2; x2, y2 exclusive) in pixels of a picture of ``shown`` = (w, h) →
    the same box in pixels of the image of ``size`` = (W, H): scaled, rounded outwards, clipped."""
    sx, sy = size[0] / shown[0], size[1] / shown[1]
    x1, y1, x2, y2 = box
    return [max(0, int(np.floor(x1 * sx))), max(0, int(np.floor(y1 * sy))),
            min(size[0], int(np.ceil(x2 * sx))), min(size[1], int(np.ceil(y2 * sy)))]
