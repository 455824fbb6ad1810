"""``coseg``: co-segmentation re-ranking, a step of the query path. The query and its shortlist agree
on the object, then the shortlist is re-ranked by masked GeM.

Collection-wide concepts (:mod:`retrieval.model.concepts`) are learned over a whole database; on a
collection of many different objects in clutter they become generic ("texture" vs "the rest").
Deep Feature Factorization is a *co-segmentation* method: it finds what a set of images that
share an object has in common, and at query time there is such a set — the query and its top K
hits. For every query:

1. **Maps**: the query (cropped to its box, if any) and its top K hits are decoded at the network's
   ``image_size`` (:func:`cosegment.activations.load_images`) and forwarded once per batch of equal
   size, tapping the co-segmentation layer (:func:`retrieval.core.backbone.default_layer`) and the
   pooled layer in the same pass (:func:`cosegment.activations.extract_layers`): **K + 1 backbone
   passes** per query (plus one smaller pass per extra scale of a multi-scale model); within one
   call a :class:`MapCache` keeps the hits' maps, so a database image in several shortlists is
   forwarded once.
2. **DFF** over the K + 1 activation maps with ``k`` factors (:func:`cosegment.dff.factorize_activations`).
3. **The shared factor(s)** (``object_rule``): ``query`` (default) —
   :func:`cosegment.dff.choose_anchored_factors`, the factors present in the query *and* in at least
   ``min_presence`` of the hits, off the image borders; ``union`` / ``single`` — the collection rules
   of :func:`cosegment.dff.select_object_factors`.
4. **Masks** by :meth:`retrieval.model.concepts.ConceptMask.mask` with the shortlist's concepts: the
   object heat by fixed-H projection, normalised, ``floor`` kept, with the *fallback* of
   :class:`~retrieval.model.concepts.ConceptOptions`: an image whose object heat is empty (the
   object factors explain < ``min_share`` of its activation mass) or near-uniform (mean ≥
   ``uniform_above``) gets no mask.
5. **Masked descriptors**: masked GeM (:func:`retrieval.model.pooling.masked_gem`, through the
   network's pooling) of the pooled map, at every scale of the model (the mask resized to each
   scale's map), combined and whitened as plain descriptors are
   (:func:`retrieval.search.extract.combine_scales`).
6. **Scores**: ``s = (1 − weight)·plain + weight·masked`` for each of the K hits (``weight = 1``
   replaces the plain score); the K are sorted by ``s``, the hits below K keep their order and
   their plain scores. A hit whose mask fell back (or that could not be read) keeps its plain
   score; a query whose own mask falls back is not re-ranked at all.

Order with α-QE: the expanded query finds the shortlist and gives the plain scores; co-segmentation
re-ranking comes after it (the masks are those of the query *image*). With a concept-masked index
the co-segmentation mask replaces the collection-wide mask in the masked scores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from cosegment.activations import extract_layers, load_images
from cosegment.dff import choose_anchored_factors, factorize_activations, max_factors, select_object_factors
from retrieval.core.backbone import default_layer, resolve_device
from retrieval.core.errors import DataError
from retrieval.core.images import resize_long_side, to_tensor
from retrieval.model.concepts import ConceptMask, ConceptOptions
from retrieval.model.network import DescriptorNet
from retrieval.search.extract import combine_scales, rescale
from retrieval.search.rerank.registry import register_reranker
from retrieval.search.rerank.step import Reranker, RerankContext

PathLike = Union[str, Path]

OBJECT_RULES = ("query", "union", "single")


@dataclass
class CosegRerankOptions:
    """Options of co-segmentation re-ranking (see the module docstring).

    K: shortlist length re-ranked (the query's top K hits). k: DFF factors over query + K hits.
    weight: share of the masked score in ``(1 − weight)·plain + weight·masked`` (1 = replace).
    object_rule: ``query`` | ``union`` | ``single``; min_presence / max_border_ratio: its thresholds.
    layer: co-segmentation layer (``None``: the backbone's default DFF layer).
    method: factoriser (``nmf`` | ``sigmoid-nmf`` | ``deep-semi-nmf``); seed: its initialisation.
    mask: how the object heat becomes a mask, and when it falls back (:class:`ConceptOptions`).
    batch_size: images per backbone forward.
    """

    K: int = 20
    k: int = 3
    weight: float = 0.5
    object_rule: str = "query"
    min_presence: float = 0.5
    max_border_ratio: float = 0.8
    layer: Optional[str] = None
    method: str = "nmf"
    seed: int = 0
    mask: ConceptOptions = field(default_factory=ConceptOptions)
    batch_size: int = 16

    def validate(self) -> "CosegRerankOptions":
        if isinstance(self.K, bool) or not isinstance(self.K, (int, np.integer)) or self.K < 1:
            raise DataError(f"co-segmentation re-ranking (--coseg-rerank K) needs K ≥ 1 hits to re-rank, got {self.K}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise DataError(f"co-segmentation re-ranking (--coseg-k) needs k ≥ 1 factors, got {self.k}")
        if not 0.0 <= self.weight <= 1.0:
            raise DataError(f"co-segmentation weight (--coseg-weight) must be in [0, 1] (1 = replace), got {self.weight}")
        if self.object_rule not in OBJECT_RULES:
            raise DataError(f"co-segmentation object_rule must be one of {', '.join(OBJECT_RULES)}, "
                            f"got {self.object_rule!r}")
        if not 0.0 <= self.min_presence <= 1.0 or self.max_border_ratio <= 0:
            raise DataError("co-segmentation min_presence must be in [0, 1] and max_border_ratio > 0")
        if self.batch_size < 1:
            raise DataError(f"co-segmentation batch_size must be ≥ 1, got {self.batch_size}")
        self.mask.validate()
        return self


@dataclass
class Reranked:
    """What :func:`coseg_rerank` returns. ids: (Q, n) int64 (−1 pads); scores: (Q, n) float32, the
    first min(K, hits) of each row re-ranked; query_fallback: (Q,) bool, queries left as they were;
    hit_fallback: per query, (K_q,) bool of the hits that kept their plain score; factors: per query
    the shared factors (numbered from 0); seconds: wall time; query_masks: per query its mask
    (h_s, w_s) float32 (:func:`query_object`), None where it fell back."""

    ids: np.ndarray
    scores: np.ndarray
    query_fallback: np.ndarray
    hit_fallback: List[np.ndarray]
    factors: List[List[int]]
    seconds: float = 0.0
    query_masks: List[Optional[torch.Tensor]] = field(default_factory=list)


def _image_tensor(net: DescriptorNet, image: Image.Image) -> torch.Tensor:
    """A PIL image → (3, h, w) float32 at the network's size, normalised for its backbone."""
    return to_tensor(resize_long_side(image.convert("RGB"), net.config.image_size),
                     net.backbone.mean, net.backbone.std)


def _maps(net: DescriptorNet, tensors: Sequence[torch.Tensor], layer: str, batch_size: int,
          device: torch.device) -> List[Tuple[torch.Tensor, List[torch.Tensor]]]:
    """Per image ``(acts (C_l, h_l, w_l), [pooled-layer map (C, h_s, w_s) per scale])``, float32
    ≥ 0 on the CPU: one forward per batch taps both layers at scale 1; each other scale is one
    more (smaller) forward of the pooled layer."""
    last = net.backbone.layer_names()[-1]
    layers = [layer] if layer == last else [layer, last]
    first = extract_layers(net.backbone, tensors, layers, batch_size=batch_size, device=device)
    per_scale = []
    for s in net.config.scales:
        if abs(s - 1.0) <= 1e-6:
            per_scale.append([m[last] for m in first])
        else:
            small = [rescale(t[None], s)[0] for t in tensors]
            per_scale.append([m[last] for m in extract_layers(net.backbone, small, [last],
                                                               batch_size=batch_size, device=device)])
    return [(first[i][layer], [ps[i] for ps in per_scale]) for i in range(len(tensors))]


class MapCache:
    """Per database index, an image's maps ``(acts, [map per scale])`` (:func:`_maps`), for at most
    ``max_images`` images (first in, first out; 0 keeps nothing). At EfficientNet-Lite0's 320 px
    an image's maps take about 0.6 MB (float32)."""

    def __init__(self, max_images: int = 512) -> None:
        self.max_images = int(max_images)
        self._maps: Dict[int, Tuple[torch.Tensor, List[torch.Tensor]]] = {}

    def __contains__(self, i: int) -> bool:
        return i in self._maps

    def get(self, i: int) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return self._maps[i]

    def put(self, i: int, maps: Tuple[torch.Tensor, List[torch.Tensor]]) -> None:
        if self.max_images <= 0:
            return
        while len(self._maps) >= self.max_images:
            self._maps.pop(next(iter(self._maps)))
        self._maps[i] = maps


def masked_descriptors(net: DescriptorNet, fmaps: Sequence[Sequence[torch.Tensor]],
                       masks: Sequence[torch.Tensor]) -> np.ndarray:
    """Masked-GeM descriptors: per image its pooled-layer maps per scale (each (C, h_s, w_s)
    float32) and its mask (h, w) float32 ≥ 0 (resized to each scale's map) → (n, D) float32."""
    dev = net.whiten_m.device
    out = []
    with torch.inference_mode():
        for maps, mask in zip(fmaps, masks):
            pooled = []
            for f in maps:
                m = mask[None, None].to(dev)
                if tuple(m.shape[-2:]) != tuple(f.shape[-2:]):
                    m = F.interpolate(m, size=tuple(f.shape[-2:]), mode="bilinear", align_corners=False)
                pooled.append(F.normalize(net.pool(f[None].to(dev).float(), m[:, 0].clamp_min(0)), dim=-1))
            out.append(combine_scales(net, pooled)[0].cpu().numpy())
    return np.stack(out).astype(np.float32) if out else np.zeros((0, net.dim), np.float32)


def _shared_factors(options: CosegRerankOptions, result) -> List[int]:
    if options.object_rule == "query":
        return choose_anchored_factors(result, 0, options.max_border_ratio, options.min_presence)
    return select_object_factors(result, rule=options.object_rule, max_border_ratio=options.max_border_ratio,
                                 min_presence=options.min_presence)


def cosegment_masks(maps: Sequence[Tuple[torch.Tensor, List[torch.Tensor]]], options: CosegRerankOptions,
                    layer: str) -> Tuple[List[torch.Tensor], List[bool], List[int]]:
    """Steps 2–4 of the module docstring for one query and its hits. ``maps``: the query's then
    each hit's (acts, maps per scale) (:func:`_maps`). Returns ``(masks, fallback, shared factors)``:
    per image its mask (h_s, w_s) float32 in [floor, 1] at the size of its first pooled map (all
    ones where it fell back) and whether it fell back."""
    acts = [a for a, _ in maps]
    shapes = [tuple(a.shape[-2:]) for a in acts]
    k = min(options.k, max_factors(shapes, acts[0].shape[0]))
    result = factorize_activations(acts, k, method=options.method, seed=options.seed)
    factors = _shared_factors(options, result)
    cm = ConceptMask(result.H, factors, layer, options=options.mask)
    masks: List[torch.Tensor] = [torch.zeros(0)] * len(maps)
    fallback = [True] * len(maps)
    groups: Dict[Tuple, List[int]] = {}  # images of one map size: one projection
    for i, (a, fm) in enumerate(maps):
        groups.setdefault((tuple(a.shape), tuple(fm[0].shape[-2:])), []).append(i)
    for (_, size), idx in groups.items():
        m = cm.mask(torch.stack([maps[i][0] for i in idx]), size).cpu()
        for j, i in enumerate(idx):
            masks[i], fallback[i] = m[j], bool(cm.last_fallback[j])
    return masks, fallback, factors


def rerank_one(net: DescriptorNet, maps: Sequence[Tuple[torch.Tensor, List[torch.Tensor]]],
               plain: np.ndarray, options: CosegRerankOptions, layer: str
               ) -> Tuple[np.ndarray, bool, np.ndarray, List[int], Optional[torch.Tensor]]:
    """New scores of one shortlist. ``maps``: the query's then each hit's (acts, maps per scale)
    (:func:`_maps`); plain: (K,) float32 plain scores. Returns ``(scores (K,) float32, query fell
    back, hit fallback (K,) bool, shared factors, the query's mask (h_s, w_s) float32 or None when
    it fell back)``."""
    masks, fallback, factors = cosegment_masks(maps, options, layer)
    fb = np.asarray(fallback[1:], bool)
    if fallback[0]:
        return plain.astype(np.float32), True, np.ones(len(plain), bool), factors, None
    d = masked_descriptors(net, [fm for _, fm in maps], masks)
    masked = d[1:] @ d[0]
    w = float(options.weight)
    new = np.where(fb, plain, (1.0 - w) * plain + w * masked).astype(np.float32)
    return new, False, fb, factors, masks[0]


def _ready(net: DescriptorNet, options: CosegRerankOptions,
           device: Optional[Union[str, torch.device]]) -> Tuple[str, torch.device]:
    """The co-segmentation layer (``options.layer``, else the backbone's DFF layer, checked) and the
    device, with ``net`` moved there in eval mode."""
    layer = options.layer or default_layer(net.backbone.name) or net.backbone.layer_names()[-1]
    net.backbone.check_layer(layer)
    dev = resolve_device(device)
    net.to(dev).eval()
    return layer, dev


#: One image's maps (:func:`_maps`): the co-segmentation layer's activations, the pooled map per scale.
Maps = Tuple[torch.Tensor, List[torch.Tensor]]


def shortlist_maps(net: DescriptorNet, query: Image.Image, row: Sequence[int], db_paths: Sequence[PathLike],
                   options: CosegRerankOptions, layer: str, device: torch.device, cache: MapCache
                   ) -> Tuple[Maps, Dict[int, Maps]]:
    """Step 1 of the module docstring: the maps (:func:`_maps`) of ``query`` and of the database
    images ``row`` (ids into ``db_paths``), the hits' read from ``cache`` when there and put there
    when computed. Returns ``(the query's maps, {id: maps})``; unreadable hits are left out."""
    have = {i: cache.get(i) for i in dict.fromkeys(row) if i in cache}
    todo = [i for i in dict.fromkeys(row) if i not in have]
    loaded = load_images([db_paths[i] for i in todo], net.config.image_size, net.backbone.mean, net.backbone.std)
    ok = {str(p): t for p, t in zip(loaded.paths, loaded.tensors)}
    todo = [i for i in todo if str(Path(db_paths[i])) in ok]  # unreadable hits keep plain scores
    fresh = _maps(net, [_image_tensor(net, query)] + [ok[str(Path(db_paths[i]))] for i in todo],
                  layer, options.batch_size, device)
    have.update(zip(todo, fresh[1:]))
    for i in todo:
        cache.put(i, have[i])
    return fresh[0], have


def query_object(net: DescriptorNet, query: Image.Image, row: Sequence[int], db_paths: Sequence[PathLike],
                 options: CosegRerankOptions, *, device: Optional[Union[str, torch.device]] = None,
                 cache: Optional[MapCache] = None) -> Optional[torch.Tensor]:
    """The query's object as co-segmentation finds it with its hits ``row`` (database ids into
    ``db_paths``; steps 1–4 of the module docstring, ``options.K`` ignored): its mask (h_s, w_s)
    float32 in [floor, 1] over the whole ``query`` image (the pooled layer's map at the network's
    ``image_size``), or ``None`` when the query's mask falls back (no shared object found, or no
    hit readable)."""
    options.validate()
    layer, dev = _ready(net, options, device)
    qmaps, have = shortlist_maps(net, query, [int(i) for i in row if i >= 0], db_paths, options, layer, dev,
                                 MapCache() if cache is None else cache)
    hits = [have[int(i)] for i in row if int(i) in have]
    if not hits:
        return None
    masks, fallback, _ = cosegment_masks([qmaps] + hits, options, layer)
    return None if fallback[0] else masks[0]


def coseg_rerank(net: DescriptorNet, queries: Sequence[Image.Image], db_paths: Sequence[PathLike],
                 ids: np.ndarray, scores: np.ndarray, options: CosegRerankOptions, *,
                 device: Optional[Union[str, torch.device]] = None, progress: bool = False,
                 cache: Optional[MapCache] = None) -> Reranked:
    """Re-rank the top ``options.K`` hits of every query by co-segmentation (module docstring).

    Args:
        net: the descriptor network that made ``scores``.
        queries: Q RGB PIL images (cropped to their boxes where the protocol crops).
        db_paths: the database image files that ``ids`` index.
        ids: (Q, n) int database indices, best first, −1 for none; scores: (Q, n) float plain scores.
        cache: the hits' maps kept between queries (:class:`MapCache`, by database index; a new
            one per call when None; ``MapCache(0)``: none), so a database image in several
            shortlists is forwarded once.
    Returns:
        :class:`Reranked` with the same shapes; only the first min(K, valid hits) of each row change
        order (same set of ids), the rest are untouched.
    """
    options.validate()
    t0 = time.perf_counter()
    ids = np.array(ids, dtype=np.int64, copy=True)
    scores = np.array(scores, dtype=np.float32, copy=True)
    if ids.shape != scores.shape or ids.ndim != 2 or ids.shape[0] != len(queries):
        raise DataError(f"ids {ids.shape} and scores {scores.shape} must be (Q, n) for {len(queries)} queries")
    layer, dev = _ready(net, options, device)
    cache = MapCache() if cache is None else cache
    qfb = np.zeros(len(queries), bool)
    hfb: List[np.ndarray] = []
    facs: List[List[int]] = []
    qmasks: List[Optional[torch.Tensor]] = []
    for q in tqdm(range(len(queries)), desc="co-seg re-rank", unit="query", disable=not progress, leave=False):
        row = [int(i) for i in ids[q, :options.K] if i >= 0]
        qmaps, have = shortlist_maps(net, queries[q], row, db_paths, options, layer, dev, cache)
        keep = [j for j, i in enumerate(row) if i in have]
        K = len(row)
        facs.append([])
        qmasks.append(None)
        if not keep:
            qfb[q] = True
            hfb.append(np.ones(K, bool))
            continue
        maps = [qmaps] + [have[row[j]] for j in keep]
        new, qf, fb, f, qmasks[-1] = rerank_one(net, maps, scores[q, keep], options, layer)
        facs[-1] = f
        if qf:
            qfb[q] = True
            hfb.append(np.ones(K, bool))
            continue
        s = scores[q, :K].copy()
        s[keep] = new
        fall = np.ones(K, bool)
        fall[keep] = fb
        order = np.argsort(-s, kind="stable")
        ids[q, :K] = np.asarray(row, np.int64)[order]
        scores[q, :K] = s[order]
        hfb.append(fall[order])
    return Reranked(ids, scores, qfb, hfb, facs, time.perf_counter() - t0, qmasks)


def rerank_ranks(net: DescriptorNet, queries: Sequence[Image.Image], db_paths: Sequence[PathLike],
                 ranks: np.ndarray, scores: np.ndarray, options: CosegRerankOptions, *,
                 device: Optional[Union[str, torch.device]] = None, progress: bool = False,
                 cache: Optional[MapCache] = None) -> Tuple[np.ndarray, Reranked]:
    """Full rankings re-ranked: ranks (Q, N) int64 best first, scores (Q, N) float32 all plain
    scores (``scores[q, i]`` for database image i) → (ranks (Q, N) int64 with the top K of each row
    re-ordered, the :class:`Reranked` of the top K)."""
    K = min(options.validate().K, ranks.shape[1])
    top = ranks[:, :K]
    r = coseg_rerank(net, queries, db_paths, top, np.take_along_axis(scores, top, 1), options,
                     device=device, progress=progress, cache=cache)
    out = ranks.copy()
    out[:, :K] = r.ids
    return out, r


def coseg_summary(r: Reranked) -> Dict[str, float]:
    """A JSON-able summary: queries re-ranked, queries and hits that fell back, seconds per query."""
    n = len(r.query_fallback)
    hits = int(sum(len(h) for h in r.hit_fallback))
    return {"queries": n, "query_fallback": int(r.query_fallback.sum()),
            "hit_fallback": int(sum(int(h.sum()) for h in r.hit_fallback)), "hits": hits,
            "seconds_per_query": r.seconds / max(n, 1)}


def coseg_options(K: int, k: int = 3, weight: Optional[float] = None) -> Optional[CosegRerankOptions]:
    """The options of the tools' ``--coseg-rerank K --coseg-k k --coseg-weight w``: ``None`` when
    ``K == 0`` (off); a one-line :class:`DataError` for a negative K, k < 1 or a weight outside
    [0, 1] (checked even when off, so a typo is never silently ignored)."""
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 0:
        raise DataError(f"--coseg-rerank takes the number of hits to re-rank (≥ 1; 0 = off), got {K}")
    opts = CosegRerankOptions(K=max(int(K), 1), k=k)
    if weight is not None:
        opts.weight = float(weight)
    opts.validate()
    return opts if K > 0 else None


@register_reranker
class CosegReranker(Reranker):
    """The query path's ``coseg`` step: :func:`coseg_rerank` of each query's top K (its
    :func:`coseg_summary`, with K, k and weight, is left in ``context.notes["coseg"]``)."""

    name = "coseg"
    summary = "co-segmentation re-ranking: DFF over the query and its top K, shortlist re-scored by masked GeM"
    Params = CosegRerankOptions
    needs_image = True
    needs_network = True

    def depth(self) -> int:
        return int(self.params.K)

    def rerank(self, ctx: RerankContext, ids: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if ctx.net is None:
            raise DataError("co-segmentation re-ranking needs the descriptor network")
        r = coseg_rerank(ctx.net, ctx.images(), ctx.index.paths, ids, scores, self.params,
                         device=ctx.device, progress=ctx.progress)
        opts = self.params
        for q, m in enumerate(r.query_masks):  # the query's object, for a later sv:region=object
            ctx.objects[(q, int(opts.K), int(opts.k))] = m
        summary: Dict[str, Any] = {"K": opts.K, "k": opts.k, "weight": opts.weight, **coseg_summary(r)}
        ctx.notes[self.name] = summary
        return r.ids, r.scores
