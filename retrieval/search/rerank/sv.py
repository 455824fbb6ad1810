"""``sv``: spatial verification of the shortlist with local features, as a step of the query path
(the revisited protocol's "+SV"; DELG's re-ranking stage, Cao, Araujo, Sim ECCV 2020).

The query and each of its top ``K`` hits are described with RootSIFT
(:func:`retrieval.search.local_features.sift_features`: at most ``max_features`` keypoints,
detected at a long side of ``max_side`` px), matched (mutual nearest neighbours + Lowe's ratio
test) and verified with a robust fit (OpenCV MAGSAC homography by default,
:func:`retrieval.search.verify.verify_pair`). A hit with at least ``min_inliers`` inliers is
*verified*; its score becomes::

    score + weight · min(inliers, saturation) / saturation

and the top K are re-ordered by the new scores (a hit that is not verified keeps its score). With
the default ``weight = 1`` a well-verified hit (≥ ``saturation`` inliers) moves above any hit
that is not verified, and among verified hits more inliers rank higher.

**Inliers on the query's object** (``region=object``). Inliers count how much *rigid scene* two
images share, and a shared background is rigid scene too: photos taken against the same wall,
or a collection whose images reuse backgrounds, verify between different objects (on the
cluttered toy collections of ``benchmarks/bench_rerank.py`` a background pair gets 100–200 inliers,
a true pair 10–60). With ``region=object`` only inliers on the query's *object* count: the object
is found by co-segmentation of the query with its top ``object_K`` hits
(:func:`retrieval.search.rerank.coseg.query_object`: DFF, the factor shared by the query and its
hits off the image borders, its heat normalised to a peak of 1), and an inlier counts when the
heat at its query keypoint is at least ``object_heat``. A ``coseg`` step earlier in the stack with
the same K and k leaves that object in the context, so it is not computed twice. A query whose
object falls back (no shared factor found) counts all its inliers, as ``region=image`` does.

Each of the K hits is annotated (:meth:`~retrieval.search.rerank.step.RerankContext.annotate`)
with ``inliers`` (int), ``verified`` (bool) and ``matches``: at most 64 inlier pairs
``[xq, yq, xh, yh]`` (spread over all of them), the query's in the pixels of the query image as
given (its box offset added back), the hit's in the hit's own pixels — what a page draws as lines
between the two.

The hits' local features are read from the index folder when it stores them (``tools/index.py
--local-features``, computed with the same ``max_side`` and at least ``max_features``); otherwise
they are computed at query time from their files and kept in a process-wide cache
(:class:`FeatureCache`, least recently used first out, by path, size and modification time) so a
hit seen again is not described again. A hit whose file is unreadable keeps its score and is
annotated as not verified (counted in ``context.notes["sv"]["unreadable"]``).
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from retrieval.core.errors import DataError, ImageError
from retrieval.core.images import load_image
from retrieval.search.local_features import LocalFeatures, backbone_features, sift_features
from retrieval.search.rerank.coseg import CosegRerankOptions, MapCache, query_object
from retrieval.search.rerank.registry import register_reranker
from retrieval.search.rerank.step import Box, Reranker, RerankContext
from retrieval.search.verify import DEFAULT_THRESHOLD_PX, METHODS, MODELS, verify_pair

#: Inlier pairs a hit record carries at most.
MAX_DRAWN = 64
#: What inliers count (module docstring): every one, or those on the query's co-segmented object.
REGIONS = ("image", "object")


@dataclass
class SVParams:
    """K: hits verified (the query's top K). max_features / max_side: SIFT's cap and detection
    size. ratio: Lowe's ratio. model / method / threshold_px: the robust fit
    (:func:`retrieval.search.verify.verify_pair`). min_inliers: inliers that make a hit verified.
    saturation: inliers of a full bonus. weight: the bonus of a fully verified hit (added to the
    score). cache: database images whose features stay in memory (0: none). stored: use the
    features the index folder stores (``tools/index.py --local-features``) when it has them.
    region: ``image`` (every inlier counts) or ``object`` (only inliers on the query's
    co-segmented object; module docstring); object_K / object_k: the hits and DFF factors it is
    co-segmented with; object_heat: the least normalised object heat at an inlier's query keypoint."""

    K: int = 20
    max_features: int = 1000
    max_side: int = 640
    ratio: float = 0.8
    model: str = "homography"
    method: str = "magsac"
    threshold_px: float = DEFAULT_THRESHOLD_PX
    min_inliers: int = 12
    saturation: int = 40
    weight: float = 1.0
    cache: int = 512
    stored: bool = True
    features: str = "sift"
    backbone_size: int = 512
    region: str = "image"
    object_K: int = 20
    object_k: int = 3
    object_heat: float = 0.3

    def validate(self) -> "SVParams":
        for name in ("K", "max_features", "min_inliers", "saturation"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DataError(f"sv:{name} must be an integer ≥ 1, got {v!r}")
        if isinstance(self.max_side, bool) or not isinstance(self.max_side, (int, np.integer)) or self.max_side < 0:
            raise DataError(f"sv:max_side must be an integer ≥ 0 (0: full size), got {self.max_side!r}")
        if not 0.0 < self.ratio <= 1.0:
            raise DataError(f"sv:ratio must be in (0, 1] (1: no ratio test), got {self.ratio}")
        if self.model not in MODELS:
            raise DataError(f"sv:model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.method not in METHODS:
            raise DataError(f"sv:method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not (self.threshold_px > 0 and np.isfinite(self.threshold_px)):
            raise DataError(f"sv:threshold_px must be > 0, got {self.threshold_px}")
        if not (self.weight >= 0 and np.isfinite(self.weight)):
            raise DataError(f"sv:weight must be ≥ 0, got {self.weight}")
        if self.features not in ("sift", "backbone"):
            raise DataError(f"sv:features must be sift or backbone, got {self.features!r}")
        if isinstance(self.backbone_size, bool) or not isinstance(self.backbone_size, (int, np.integer)) \
                or self.backbone_size < 32:
            raise DataError(f"sv:backbone_size must be an integer ≥ 32, got {self.backbone_size!r}")
        if self.region not in REGIONS:
            raise DataError(f"sv:region must be one of {', '.join(REGIONS)}, got {self.region!r}")
        for name in ("object_K", "object_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DataError(f"sv:{name} must be an integer ≥ 1, got {v!r}")
        if not 0.0 <= self.object_heat <= 1.0:
            raise DataError(f"sv:object_heat must be in [0, 1], got {self.object_heat}")
        if isinstance(self.cache, bool) or not isinstance(self.cache, (int, np.integer)) or self.cache < 0:
            raise DataError(f"sv:cache must be an integer ≥ 0, got {self.cache!r}")
        return self


class FeatureCache:
    """Local features of database images by ``(path, size, mtime_ns, max_features, max_side)``,
    kept compact (float16 descriptors; about 264 kB an image at 1000 features), for at most
    ``max_images`` images, least recently used first out. Thread-safe (a server's requests)."""

    def __init__(self, max_images: int = 512) -> None:
        self.max_images = int(max_images)
        self._items: "OrderedDict[Tuple[Any, ...], Tuple[np.ndarray, np.ndarray, Tuple[int, int]]]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Tuple[Any, ...]) -> Optional[LocalFeatures]:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
        xy, desc, size = item
        return LocalFeatures(xy, desc.astype(np.float32), size)

    def put(self, key: Tuple[Any, ...], f: LocalFeatures) -> None:
        if self.max_images <= 0:
            return
        xy, desc = f.compact(len(f))
        with self._lock:
            self._items[key] = (xy, desc, f.size)
            self._items.move_to_end(key)
            while len(self._items) > self.max_images:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


#: The process-wide cache of database images' features (resized by the ``cache`` parameter).
CACHE = FeatureCache()


def describe_local(image: Image.Image, params: SVParams, net: Any = None, device: Any = None) -> LocalFeatures:
    """``image``'s local features of the kind ``params.features`` (``net``: the descriptor network,
    for ``backbone``)."""
    if params.features == "backbone":
        if net is None:
            raise DataError("sv:features=backbone needs the descriptor network")
        return backbone_features(net.backbone, image, max_features=params.max_features,
                                 image_size=params.backbone_size, device=device)
    return sift_features(image, params.max_features, params.max_side)


def hit_features(path: str, params: SVParams, cache: Optional[FeatureCache] = None, index: Any = None,
                 i: int = -1, net: Any = None, device: Any = None) -> Optional[LocalFeatures]:
    """Local features of the database image ``i`` at ``path``: stored in the index folder
    (``tools/index.py --local-features``, computed the same way), else from the cache, else computed
    from the file (and cached); ``None``: unreadable. Features are of the image as indexed (decoded
    upright, RGB), so hit coordinates are its pixels."""
    cache = CACHE if cache is None else cache
    stored = getattr(index, "stored_local_features", None)
    if stored is not None and i >= 0 and params.stored and params.features == "sift":
        f = stored(int(i), params.max_features, params.max_side)
        if f is not None:
            return f
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns, params.max_features, params.max_side, params.features,
           params.backbone_size if params.features == "backbone" else 0)
    f = cache.get(key)
    if f is None:
        try:
            img = load_image(path)
        except (ImageError, OSError):
            return None
        f = describe_local(img, params, net, device)
        cache.put(key, f)
    return f


def box_offset(box: Box, image: Image.Image) -> Tuple[float, float]:
    """Top-left of the crop :func:`retrieval.core.images.crop_box` made of ``box`` (0, 0 without one)."""
    if box is None:
        return 0.0, 0.0
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1 = max(0, x1), max(0, y1)
    w, h = image.size
    if 0 < w <= x2 - x1 and 0 < h <= y2 - y1:  # the crop fits the box: it was cropped to it
        return float(x1), float(y1)
    return 0.0, 0.0  # the box was empty once clipped: the whole image was kept


def drawn_matches(matches: np.ndarray, offset: Tuple[float, float], limit: int = MAX_DRAWN) -> List[List[float]]:
    """At most ``limit`` of the (m, 4) inlier pairs, evenly spread, query side shifted by ``offset``,
    as ``[[xq, yq, xh, yh], ...]`` rounded to 0.1 px."""
    if matches.shape[0] == 0:
        return []
    pick = np.unique(np.linspace(0, matches.shape[0] - 1, min(limit, matches.shape[0])).round().astype(int))
    m = matches[pick].astype(np.float64)
    m[:, 0] += offset[0]
    m[:, 1] += offset[1]
    return [[round(float(v), 1) for v in row] for row in m]


def on_object(mask: Optional[torch.Tensor], points: np.ndarray, size: Tuple[int, int], threshold: float) -> np.ndarray:
    """Which of ``points`` (m, 2) float (x, y pixels of an image of ``size`` (w, h)) lie on the
    object: the mask (h_s, w_s) float32 in [0, 1] over the whole image, sampled bilinearly at each
    point (cell centres at ((j + 0.5)·w / w_s, (i + 0.5)·h / h_s)), at least ``threshold`` →
    (m,) bool. ``mask`` None (no object found): every point."""
    m = int(points.shape[0])
    if mask is None or m == 0:
        return np.ones(m, bool)
    w, h = size
    g = torch.as_tensor(np.asarray(points, np.float32)).reshape(1, 1, m, 2).clone()
    g[..., 0] = g[..., 0] / max(float(w), 1.0) * 2.0 - 1.0
    g[..., 1] = g[..., 1] / max(float(h), 1.0) * 2.0 - 1.0
    heat = F.grid_sample(mask.detach().float().cpu()[None, None], g, mode="bilinear",
                         padding_mode="border", align_corners=False)
    return (heat.reshape(m).numpy() >= threshold)


def verified_scores(inliers: np.ndarray, scores: np.ndarray, params: SVParams) -> np.ndarray:
    """The new scores of K hits (module docstring): inliers (K,) int, scores (K,) float32."""
    bonus = np.minimum(inliers, params.saturation) / float(params.saturation)
    bonus = np.where(inliers >= params.min_inliers, bonus, 0.0)
    return (scores.astype(np.float64) + params.weight * bonus).astype(np.float32)


@register_reranker
class SpatialVerification(Reranker):
    """The query path's ``sv`` step (module docstring); leaves ``context.notes["sv"]``: K, hits
    verified, unreadable hits, seconds per query."""

    name = "sv"
    summary = "spatial verification: RootSIFT matched to each of the top K, MAGSAC homography; inliers re-rank"
    Params = SVParams
    needs_image = True

    def __init__(self, params: Optional[Any] = None, **values: Any) -> None:
        super().__init__(params, **values)
        self.needs_network = self.params.features == "backbone" or self.params.region == "object"  # type: ignore[misc]

    def depth(self) -> int:
        p = self.params
        return max(int(p.K), int(p.object_K)) if p.region == "object" else int(p.K)

    def rerank(self, ctx: RerankContext, ids: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        p = self.params
        if CACHE.max_images < p.cache:
            CACHE.max_images = p.cache
        t0 = time.perf_counter()
        ids = np.array(ids, np.int64, copy=True)
        scores = np.array(scores, np.float32, copy=True)
        verified = unreadable = no_object = 0
        maps = MapCache()  # the hits' co-segmentation maps, shared by this batch's queries
        for q in range(ids.shape[0]):
            head = np.flatnonzero(ids[q] >= 0)[:p.K]
            if head.size == 0:
                continue
            image = ctx.image(q)
            fq = describe_local(image, p, ctx.net, ctx.device)
            offset = box_offset(ctx.boxes[q] if q < len(ctx.boxes) else None, image)
            row = ids[q, head]
            paths = ctx.index.paths.many(row.tolist()) if hasattr(ctx.index.paths, "many") else \
                [ctx.index.paths[int(i)] for i in row]
            mask = None
            if p.region == "object":
                mask = self._object(ctx, q, ids[q], maps)
                no_object += int(mask is None)
            inl = np.zeros(head.size, np.int64)
            for j, (i, path) in enumerate(zip(row, paths)):
                fh = hit_features(path, p, index=ctx.index, i=int(i), net=ctx.net, device=ctx.device)
                if fh is None:  # unreadable: keeps its score, shown as not verified
                    unreadable += 1
                    ctx.annotate(q, int(i), inliers=0, verified=False, matches=[])
                    continue
                v = verify_pair(fq, fh, ratio=p.ratio, model=p.model, threshold_px=p.threshold_px, method=p.method)
                matches = v.matches
                extra: Dict[str, Any] = {}
                if p.region == "object":
                    matches = matches[on_object(mask, matches[:, :2], image.size, p.object_heat)]
                    extra = {"inliers_all": int(v.inliers)}
                inl[j] = matches.shape[0]
                ok = inl[j] >= p.min_inliers
                verified += int(ok)
                ctx.annotate(q, int(i), inliers=int(inl[j]), verified=bool(ok),
                             matches=drawn_matches(matches, offset), **extra)
            if head.size < 2:
                continue
            s = verified_scores(inl, scores[q, head], p)
            order = np.argsort(-s, kind="stable")
            ids[q, head] = row[order]
            scores[q, head] = s[order]
        ctx.notes[self.name] = {"K": p.K, "verified": verified, "unreadable": unreadable,
                                "seconds_per_query": (time.perf_counter() - t0) / max(ids.shape[0], 1)}
        if p.region == "object":
            ctx.notes[self.name].update(region="object", object_fallback=no_object)
        return ids, scores

    def _object(self, ctx: RerankContext, q: int, row: np.ndarray, maps: MapCache) -> Optional[torch.Tensor]:
        """Query ``q``'s object (module docstring): from the context when a ``coseg`` step with the
        same K and k left it, else co-segmented with the first ``object_K`` hits of ``row``."""
        p = self.params
        key = (int(q), int(p.object_K), int(p.object_k))
        if key not in ctx.objects:
            if ctx.net is None:
                raise DataError("sv:region=object needs the descriptor network (co-segmentation)")
            hits = [int(i) for i in row if i >= 0][:p.object_K]
            ctx.objects[key] = query_object(ctx.net, ctx.image(q), hits, ctx.index.paths,
                                            CosegRerankOptions(K=p.object_K, k=p.object_k), device=ctx.device,
                                            cache=maps)
        return ctx.objects[key]
