"""What each tool runs, as one function a Python user can call with the tool's own options.

``tools/index.py`` → :func:`run_index`, ``tools/search.py`` → :func:`run_search`,
``tools/evaluate.py`` → :func:`run_evaluation`, ``tools/extract.py`` → :func:`run_extract`. Each resolves the model (a YAML config, a checkpoint,
or the model an index records) and the config's sections, then calls the library functions of its
room; the tools only parse arguments and print what these return.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from retrieval.core.backbone import resolve_device
from retrieval.core.errors import DataError
from retrieval.evaluation.datasets import load_dataset
from retrieval.evaluation.run import evaluate_dataset, with_scales
from retrieval.loading import load_model, search_model
from retrieval.model.concepts import attach_concepts
from retrieval.model.network import MULTISCALE, DescriptorNet, build_network
from retrieval.search.build import BuildReport, build_index_from_shards
from retrieval.search.collection import IndexReport, index_images
from retrieval.search.compaction import CompactReport, compact_index
from retrieval.search.hit_pages import write_hits_html, write_hits_png
from retrieval.search.index import ImageIndex
from retrieval.search.expansion import dba_index
from retrieval.search.query import Query, QueryPath, query_steps
from retrieval.search.rerank.coseg import coseg_options
from retrieval.search.sharded_extract import ExtractReport, extract_shards
from retrieval.settings import Settings, load_settings

PathLike = Union[str, Path]


def _model(settings: Settings, model: Optional[PathLike]) -> DescriptorNet:
    """``model`` (a checkpoint or YAML) when given, else the config's ``model:`` section."""
    return load_model(model) if model else build_network(settings.model)


def run_index(images: Optional[PathLike] = None, out: PathLike = "index", *, config: Optional[PathLike] = None,
              model: Optional[PathLike] = None, concepts: Optional[PathLike] = None,
              object_factor: Optional[int] = None, factory: Optional[str] = None,
              batch_size: Optional[int] = None, workers: Optional[int] = None, device: Optional[str] = None,
              dba: int = 0, alpha: float = 3.0, progress: bool = True, prune: bool = False,
              descriptors: Optional[PathLike] = None, memory_budget: str = "4G",
              on_disk: bool = False, compact: bool = False) -> Union[IndexReport, BuildReport, CompactReport]:
    """Describe the images of ``images`` (folder or list file) and add them to the index at ``out``
    (changed files are described again; ``prune`` drops vanished ones); or, with ``descriptors``
    (a folder of tools/extract.py), build ``out`` from its shards with ``factory`` (default
    ``auto``) under ``memory_budget``, its inverted lists ``on_disk``.

    ``config``'s ``extract:`` and ``index:`` sections give the defaults of ``batch_size``,
    ``workers``, ``device`` and ``factory``; ``concepts`` pools with concept-masked GeM; ``dba > 0``
    applies database-side augmentation with ``dba`` neighbours afterwards. ``compact``: rewrite the
    index at ``out`` without its removed ids, in one segment (no images or descriptors then).
    """
    if compact:
        if images is not None or descriptors is not None:
            raise DataError("--compact rewrites the index given by --out; give no --images or --descriptors")
        return compact_index(out, progress=progress)
    if (images is None) == (descriptors is None):
        raise DataError("give either images (a folder or list) or descriptors (a folder of tools/extract.py)")
    settings = load_settings(config)
    if factory:
        settings.index.factory = factory
    if descriptors is not None:
        return build_index_from_shards(descriptors, out, factory=factory or "auto", memory_budget=memory_budget,
                                       on_disk=on_disk, index_config=settings.index, progress=progress)
    if on_disk:
        raise DataError("--on-disk builds from --descriptors (run tools/extract.py first)")
    resolve_device(device or settings.extract.device)  # no CUDA device: one line, before any work
    net = _model(settings, model)
    attach_concepts(net, concepts, object_factor)
    report = index_images(
        net, images, out, index_config=settings.index, batch_size=batch_size or settings.extract.batch_size,
        workers=workers if workers is not None else settings.extract.workers,
        device=device or settings.extract.device, progress=progress, model_source=model, prune=prune)
    if dba > 0:
        dba_index(ImageIndex.load(out), dba, alpha).save(out)
    return report


def run_extract(images: PathLike, out: PathLike, *, config: Optional[PathLike] = None,
                model: Optional[PathLike] = None, shard_size: int = 10000, batch_size: Optional[int] = None,
                workers: Optional[int] = None, device: Optional[str] = None,
                progress: bool = True) -> ExtractReport:
    """Describe ``images`` (folder or list file) into descriptor shards in ``out``: this process's
    shards under torchrun / srun, all of them otherwise; complete shards are skipped (resume)."""
    settings = load_settings(config)
    resolve_device(device or settings.extract.device)  # no CUDA device: one line, before any work
    net = _model(settings, model)
    return extract_shards(net, images, out, shard_size=shard_size, batch_size=batch_size or settings.extract.batch_size,
                          workers=workers if workers is not None else settings.extract.workers,
                          device=device or settings.extract.device, progress=progress)


def run_search(queries: Sequence[PathLike] = (), index: PathLike = "index", *, top: int = 10,
               model: Optional[PathLike] = None, concepts: Optional[PathLike] = None,
               object_factor: Optional[int] = None, qe: int = 0, alpha: float = 3.0,
               nprobe: Optional[int] = None, ef_search: Optional[int] = None, rerank: Optional[bool] = None,
               device: Optional[str] = None, html: Optional[PathLike] = None,
               png: Optional[PathLike] = None, boxes: Optional[Sequence[Optional[Sequence[float]]]] = None,
               config: Optional[PathLike] = None, coseg_rerank: int = 0, coseg_k: int = 3,
               coseg_weight: Optional[float] = None, query_ids: Sequence[int] = (),
               steps: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Search the index folder ``index`` with each query image and each stored id of
    ``query_ids`` (its stored descriptor: no forward pass), in that order, through the query path
    (:mod:`retrieval.search.query`), with the model that built it (or ``model``) and the concepts
    it was built with (or ``concepts``); optionally each query cropped to its box (x1, y1, x2, y2
    pixels; one box for all queries, or one per query). Re-ranking steps, in order: ``qe``
    neighbours of α-QE (``alpha``), ``coseg_rerank > 0``: the top ``coseg_rerank`` hits re-ranked
    by co-segmentation with ``coseg_k`` factors, then ``steps`` (``["qe:k=2", "coseg:K=20"]``, each
    may list several, comma-separated). ``rerank``: exact re-ranking of an approximate index
    (default on). Hit pages go to ``html`` / ``png``. ``config``: a settings file whose
    ``extract.device`` and ``index:`` search settings (nprobe, ef_search, rerank) are the defaults.
    Returns ``[{"query", "hits": [{"rank", "id", "path", "score", "missing"}]}]`` in query order."""
    if top < 1:
        raise DataError(f"top must be ≥ 1, got {top}")
    if qe < 0 or alpha < 0:
        raise DataError("qe and alpha must be ≥ 0")
    queries, query_ids = list(queries), [int(i) for i in query_ids]
    if not queries and not query_ids:
        raise DataError("give at least one query image or stored id (--query / --query-id)")
    if config is not None:
        settings = load_settings(config)
        device = device or settings.extract.device
        nprobe = nprobe if nprobe is not None else settings.index.nprobe
        ef_search = ef_search if ef_search is not None else settings.index.ef_search
        rerank = rerank if rerank is not None else settings.index.rerank
    resolve_device(device)  # no CUDA device: one line, before the index and the model are loaded
    n = len(queries) + len(query_ids)
    if boxes is not None and len(boxes) == 1 and n > 1:
        boxes = list(boxes) * n
    if boxes is not None and len(boxes) != n:
        raise DataError(f"{len(boxes)} boxes for {n} queries: give one box for all, or one per query")
    chosen = query_steps(qe, alpha, coseg_options(coseg_rerank, coseg_k, coseg_weight), steps)
    idx = ImageIndex.load(index)
    net = search_model(idx, model, concepts, object_factor)
    path = QueryPath(idx, net, chosen, device=device,
                     search_kwargs={"nprobe": nprobe, "ef_search": ef_search, "rerank": rerank})
    boxes = list(boxes) if boxes is not None else [None] * n
    asked = [Query(image=q, box=b) for q, b in zip(queries, boxes)] + \
            [Query(id=i, box=b) for i, b in zip(query_ids, boxes[len(queries):])]
    results = path.run(asked, top).records()
    if html:
        write_hits_html(html, results)
    if png:
        write_hits_png(png, results)
    return results


def run_evaluation(dataset: str, *, data_root: Optional[PathLike] = None, config: Optional[PathLike] = None,
                   model: Optional[PathLike] = None, qe: int = 0, alpha: float = 3.0, dba: int = 0,
                   scales: Optional[str] = None, index: Optional[PathLike] = None,
                   device: Optional[str] = None, progress: bool = False, coseg_rerank: int = 0,
                   coseg_k: int = 3, coseg_weight: Optional[float] = None,
                   steps: Optional[Sequence[str]] = None, search_index: bool = False) -> Dict[str, Any]:
    """Evaluate a model on ``dataset`` (see :func:`retrieval.evaluation.datasets.load_dataset`)
    with the revisited protocol; ``scales``: ``"multi"`` (1, 1/√2, 1/2), ``"single"`` or ``None``
    (the model's own); ``index``: a folder caching the database descriptors (``search_index``: and
    searched as it is, not exactly); ``coseg_rerank`` / ``coseg_k`` / ``coseg_weight``:
    co-segmentation re-ranking of the top K; ``steps``: further re-ranking steps by name, after
    α-QE and co-segmentation (:mod:`retrieval.search.rerank`). Returns the report of
    :func:`retrieval.evaluation.run.evaluate_dataset`."""
    if qe < 0 or dba < 0:
        raise DataError("--qe and --dba take a number of neighbours ≥ 0")
    if alpha < 0:
        raise DataError("--alpha must be ≥ 0")
    coseg = coseg_options(coseg_rerank, coseg_k, coseg_weight)
    ds = load_dataset(dataset, data_root)  # before the model: a missing dataset is quick to report
    settings = load_settings(config)
    resolve_device(device or settings.extract.device)
    net = _model(settings, model)
    with_scales(net, MULTISCALE if scales == "multi" else (1.0,) if scales == "single" else None)
    return evaluate_dataset(net, ds, qe_k=qe, alpha=alpha, dba_k=dba, cache=index,
                            batch_size=settings.extract.batch_size, workers=settings.extract.workers,
                            device=device or settings.extract.device, progress=progress, coseg=coseg,
                            steps=steps, search_cache=search_index)
