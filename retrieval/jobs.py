"""What each tool runs, as one function a Python user can call with the tool's own options.

``tools/index.py`` → :func:`run_index`, ``tools/search.py`` → :func:`run_search`,
``tools/evaluate.py`` → :func:`run_evaluation`, ``tools/extract.py`` → :func:`run_extract`, ``tools/export.py`` → :func:`run_export`. Each resolves the model (a YAML config, a checkpoint,
or the model an index records) and the config's sections, then calls the library functions of its
room; the tools only parse arguments and print what these return.
``tools/train_gem.py`` → :func:`run_train` (also ``retrieval.train``), ``tools/coseg.py`` →
:func:`run_coseg`, ``tools/demo.py`` → :func:`run_demo`: this module is the one place where a
tool's arguments become its job.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from cosegment.config import load_coseg_config, parse_factors
from cosegment.pipeline import CosegReport, cosegment
from retrieval.core.backbone import resolve_device, set_threads
from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError, DataError
from retrieval.core.ranks import current_ranks
from retrieval.demo import DemoResult, demo
from retrieval.evaluation.datasets import load_dataset
from retrieval.evaluation.run import evaluate_dataset, with_scales
from retrieval.loading import load_model, search_model, with_input
from retrieval.model.concepts import attach_concepts
from retrieval.model.network import MULTISCALE, DescriptorNet, build_network
from retrieval.model.onnx_export import ExportReport, export_onnx
from retrieval.search.build import BuildReport, build_index_from_shards
from retrieval.search.collection import IndexReport, index_images
from retrieval.search.compaction import CompactReport, compact_index
from retrieval.search.expansion import dba_index
from retrieval.search.hit_pages import write_hits_html, write_hits_png
from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, QueryPath, query_steps
from retrieval.search.rerank.coseg import coseg_options
from retrieval.search.sharded_extract import ExtractReport, extract_shards
from retrieval.settings import Settings, load_settings
from retrieval.training.config import TrainConfig, UnsupervisedConfig
from retrieval.training.distributed import distributed_session
from retrieval.training.results import TrainResult
from retrieval.training.supervised import load_training_pairs
from retrieval.training.supervised import train as train_supervised
from retrieval.training.unsupervised import load_unlabeled_data, train_unsupervised
from retrieval.core.image_listing import scan_images
from retrieval.dedup.calibration import calibrate_model
from retrieval.dedup.confirm import near_verifier
from retrieval.dedup.finder import KINDS as DEDUP_KINDS
from retrieval.dedup.finder import find_duplicates
from retrieval.dedup.moves import move_files
from retrieval.dedup.moves import undo as undo_moves
from retrieval.dedup.report import write_csv as write_dedup_csv
from retrieval.dedup.report import write_html as write_dedup_html
from retrieval.dedup.report import write_png as write_dedup_png
from retrieval.dedup.thresholds import DEFAULT_FINGERPRINT, Thresholds, load_thresholds, save_thresholds, thresholds_file
from retrieval.loading import model_for_index
from retrieval.search.extract import extract_descriptors

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
              on_disk: bool = False, compact: bool = False, graph: int = 0, local_features: int = 0,
              image_size: Optional[int] = None, scales: Optional[Sequence[float]] = None,
              target_recall: Optional[float] = None) -> Union[IndexReport, BuildReport, CompactReport]:
    """Describe the images of ``images`` (folder or list file) and add them to the index at ``out``
    (changed files are described again; ``prune`` drops vanished ones); or, with ``descriptors``
    (a folder of tools/extract.py), build ``out`` from its shards with ``factory`` (default
    ``auto``) under ``memory_budget``, its inverted lists ``on_disk``, its search setting tuned for
    ``target_recall`` (:func:`~retrieval.search.build.build_index_from_shards`).

    ``config``'s ``extract:`` and ``index:`` sections give the defaults of ``batch_size``,
    ``workers``, ``device`` and ``factory``; ``concepts`` pools with concept-masked GeM; ``dba > 0``
    applies database-side augmentation with ``dba`` neighbours afterwards. ``compact``: rewrite the
    index at ``out`` without its removed ids, in one segment (no images or descriptors then).
    ``graph > 0``: then store the k-NN graph with ``graph`` neighbours (:func:`store_index_graph`);
    ``local_features > 0``: then store at most that many RootSIFT features per image
    (:func:`store_index_local_features`). ``image_size`` / ``scales``: describe at these instead of
    the model's own.
    """
    if isinstance(graph, bool) or not isinstance(graph, int) or graph < 0:
        raise DataError(f"--graph takes the neighbours per image (≥ 1), got {graph}")
    if isinstance(local_features, bool) or not isinstance(local_features, int) or local_features < 0:
        raise DataError(f"--local-features takes the features kept per image (≥ 1), got {local_features}")
    if graph or local_features:
        report = run_index(images, out, config=config, model=model, concepts=concepts, object_factor=object_factor,
                           factory=factory, batch_size=batch_size, workers=workers, device=device, dba=dba,
                           alpha=alpha, progress=progress, prune=prune, descriptors=descriptors,
                           memory_budget=memory_budget, on_disk=on_disk, compact=compact,
                           image_size=image_size, scales=scales, target_recall=target_recall)
        if graph:
            store_index_graph(out, graph, progress=progress)
        if local_features:
            store_index_local_features(out, local_features, progress=progress)
        return report
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
                                       on_disk=on_disk, index_config=settings.index, progress=progress,
                                       target_recall=target_recall)
    if on_disk:
        raise DataError("--on-disk builds from --descriptors (run tools/extract.py first)")
    resolve_device(device or settings.extract.device)  # no CUDA device: one line, before any work
    net = with_input(_model(settings, model), image_size, scales)
    attach_concepts(net, concepts, object_factor)
    report = index_images(
        net, images, out, index_config=settings.index, batch_size=batch_size or settings.extract.batch_size,
        workers=workers if workers is not None else settings.extract.workers,
        device=device or settings.extract.device, progress=progress, model_source=model, prune=prune,
        memory_budget=memory_budget)
    if dba > 0:
        dba_index(ImageIndex.load(out), dba, alpha).save(out)
    return report


def run_extract(images: PathLike, out: PathLike, *, config: Optional[PathLike] = None,
                model: Optional[PathLike] = None, shard_size: int = 10000, batch_size: Optional[int] = None,
                workers: Optional[int] = None, device: Optional[str] = None,
                progress: bool = True, image_size: Optional[int] = None,
                scales: Optional[Sequence[float]] = None) -> ExtractReport:
    """Describe ``images`` (folder or list file) into descriptor shards in ``out``: this process's
    shards under torchrun / srun, all of them otherwise; complete shards are skipped (resume).
    ``image_size`` / ``scales``: describe at these instead of the model's own."""
    settings = load_settings(config)
    resolve_device(device or settings.extract.device)  # no CUDA device: one line, before any work
    net = with_input(_model(settings, model), image_size, scales)
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
               steps: Optional[Sequence[str]] = None, image_size: Optional[int] = None,
               scales: Optional[Sequence[float]] = None) -> List[Dict[str, Any]]:
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
    ``image_size`` / ``scales``: describe the queries at these (default: as the index was described).
    Returns ``[{"query", "hits": [{"rank", "id", "path", "score", "missing"}]}]`` in query order,
    for the queries that could be searched: a bad one (unreadable, its box outside the image, an
    unknown id) is left out and listed in the result's ``failed`` (``[{"query", "reason"}]``;
    :class:`~retrieval.search.query.Records`); when none can be searched, its error is raised."""
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
    net = with_input(search_model(idx, model, concepts, object_factor), image_size, scales)
    path = QueryPath(idx, net, chosen, device=device,
                     search_kwargs={"nprobe": nprobe, "ef_search": ef_search, "rerank": rerank})
    boxes = list(boxes) if boxes is not None else [None] * n
    asked = [Query(image=q, box=b) for q, b in zip(queries, boxes)] + \
            [Query(id=i, box=b) for i, b in zip(query_ids, boxes[len(queries):])]
    results = path.run(asked, top, skip_bad=True).records()
    if html:
        write_hits_html(html, results)
    if png:
        write_hits_png(png, results)
    return results


def run_evaluation(dataset: str, *, data_root: Optional[PathLike] = None, config: Optional[PathLike] = None,
                   model: Optional[PathLike] = None, qe: int = 0, alpha: float = 3.0, dba: int = 0,
                   scales: Union[str, Sequence[float], None] = None, index: Optional[PathLike] = None,
                   device: Optional[str] = None, progress: bool = False, coseg_rerank: int = 0,
                   coseg_k: int = 3, coseg_weight: Optional[float] = None,
                   steps: Optional[Sequence[str]] = None, search_index: bool = False,
                   image_size: Optional[int] = None) -> Dict[str, Any]:
    """Evaluate a model on ``dataset`` (see :func:`retrieval.evaluation.datasets.load_dataset`)
    with the revisited protocol; ``scales``: ``"multi"`` (1, 1/√2, 1/2), ``"single"`` or ``None``
    (the model's own); ``index``: a folder caching the database descriptors (``search_index``: and
    searched as it is, not exactly); ``coseg_rerank`` / ``coseg_k`` / ``coseg_weight``:
    co-segmentation re-ranking of the top K; ``steps``: further re-ranking steps by name, after
    α-QE and co-segmentation (:mod:`retrieval.search.rerank`); ``scales`` may also be a list of
    scales, ``image_size`` a long side to describe at. Returns the report of
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
    with_input(net, image_size, None if isinstance(scales, str) else scales)
    return evaluate_dataset(net, ds, qe_k=qe, alpha=alpha, dba_k=dba, cache=index,
                            batch_size=settings.extract.batch_size, workers=settings.extract.workers,
                            device=device or settings.extract.device, progress=progress, coseg=coseg,
                            steps=steps, search_cache=search_index)


def run_train(settings: Union[PathLike, Settings], *, data: Optional[PathLike] = None,
              out: Optional[PathLike] = None, resume: bool = False, epochs: Optional[int] = None,
              device: Optional[str] = None, workers: Optional[int] = None, progress: bool = True,
              log: Callable[[str], None] = print) -> TrainResult:
    """Train the model of a training config into a run folder: what ``tools/train_gem.py`` runs
    (also ``retrieval.train``).

    Reads the ``train:`` section (and ``unsupervised:`` when present), loads the data, builds the
    network of the ``model:`` section and runs the matching driver: without ``unsupervised:``,
    label-supervised fine-tuning (:func:`retrieval.training.supervised.train`) on the pairs of
    ``train.data`` (class folders, a pairs CSV, the SfM-120k pickle, or ``toy``); with it,
    cluster-then-train periods on unlabeled images
    (:func:`retrieval.training.unsupervised.train_unsupervised`; ``resume`` and ``epochs`` do not
    apply, ``unsupervised.periods`` sets the periods). Launched by ``torchrun`` or ``srun`` with
    several processes, supervised training is distributed (:mod:`retrieval.training.distributed`):
    the process group lasts the run, rank 0 prepares the data first (a toy collection is generated
    once) and alone logs and writes the run folder. Unsupervised training is refused under several
    processes (its clustering is a whole-collection computation of one process).

    Args:
        settings: a YAML config path (``configs/train_*.yaml``) or loaded :class:`~retrieval.settings.Settings`.
        data: training data, overriding ``train.data`` (and ``unsupervised.images``).
        out: the run folder (default ``runs/<config name>``).
        resume: continue from ``<out>/last.pt`` (supervised only).
        epochs: train up to this epoch, overriding ``train.epochs`` (supervised only; ≥ 1).
        device: ``cpu`` | ``cuda`` | ``cuda:N``, overriding ``train.device``.
        workers: image decoding processes, overriding ``train.workers``.
        progress: progress bars; log: where the data summary and the per-epoch/period lines go.

    Returns:
        :class:`~retrieval.training.results.TrainResult` (of epochs, or of periods; ``rank``: this
        process's), with ``to_json()`` and ``summary()``.

    Raises:
        ConfigError, DataError, WeightsError, ResourceError: one-line user errors.
    """
    if not isinstance(settings, Settings):
        settings = load_settings(settings)
    where = settings.source or "config"
    cfg = from_dict(TrainConfig, settings.raw.get("train") or {}, f"{where}: train")
    if device:
        cfg.device = device
    resolve_device(cfg.device)  # a missing CUDA device is one line, before any data is read or folder made
    if workers is not None:
        cfg.workers = workers
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs: must be ≥ 1, got {epochs}")
    out_dir = Path(out) if out else Path("runs") / Path(where).stem

    if settings.raw.get("unsupervised") is not None:  # pairs source `cluster`: no labels (JULE-style)
        if current_ranks().parallel:
            raise ConfigError("unsupervised training runs in one process; launch it with python, not torchrun/srun")
        if resume or epochs is not None:
            raise ConfigError("--resume/--epochs do not apply to unsupervised training; set unsupervised.periods")
        ucfg = from_dict(UnsupervisedConfig, settings.raw.get("unsupervised") or {}, f"{where}: unsupervised")
        paths, truth, val = load_unlabeled_data(cfg, ucfg, data, where=where, log=log)
        net = build_network(settings.model, seed=cfg.seed)
        return train_unsupervised(net, paths, cfg, ucfg, out_dir, val=val, truth=truth,
                                  val_on_train=ucfg.validation == "transductive", progress=progress, log=log)

    with distributed_session(cfg.device) as dist:
        if not dist.is_main:  # rank 0 alone logs
            progress, log = False, _silent
        with dist.main_first():  # a toy collection is generated once, by rank 0
            train_pairs, val_pairs, skipped = load_training_pairs(cfg, data, log=log)
        log(f"train: {train_pairs.summary()}")
        log(f"val:   {val_pairs.summary()}")
        net = build_network(settings.model, seed=cfg.seed)
        return train_supervised(net, train_pairs, cfg, out_dir, val=val_pairs, resume=resume, epochs=epochs,
                                skipped=skipped, progress=progress, log=log)


def _silent(msg: str) -> None:
    """The log of ranks other than 0."""


#: ``retrieval.train`` (the package's public API): the same function
train = run_train


def run_coseg(images: PathLike, *, config: Optional[PathLike] = None, k: Optional[int] = None,
              layer: Optional[str] = None, image_size: Optional[int] = None, factorizer: Optional[str] = None,
              threshold: Optional[str] = None, object_factor: Optional[str] = None, seed: Optional[int] = None,
              masks: Optional[PathLike] = None, part_masks: Optional[PathLike] = None, parts: bool = False,
              compare: bool = False, joint: bool = False, concepts: Optional[PathLike] = None,
              save_concepts: Optional[PathLike] = None, out: Optional[PathLike] = "coseg_out",
              device: Optional[str] = None, progress: Optional[Callable[[str], None]] = None) -> CosegReport:
    """Co-segment the image sets of the folder ``images``: what ``tools/coseg.py`` runs.

    The ``coseg:`` section of ``config`` (a YAML settings file, or a checkpoint: its model), with
    ``k``, ``layer``, ``image_size``, ``factorizer``, ``threshold``, ``seed`` and ``object_factor``
    (factor numbers from 0, ``"1"`` or ``"0,2"``) overriding it
    (:func:`cosegment.config.load_coseg_config`); the backbone of ``config``'s model (default: the
    default model's); then :func:`cosegment.pipeline.cosegment` with the other arguments (``out``
    ``None``: no pictures written). The threads are set first (``$GEMSEG_THREADS``, else every
    core). Returns its :class:`~cosegment.pipeline.CosegReport`, ``model_seconds`` filled in.

    Raises:
        ConfigError, DataError, ModelMismatchError, WeightsError: one-line user errors (``images``
        not a folder, a bad ``object_factor``, ...).
    """
    factors = parse_factors(object_factor, "--object-factor") if object_factor else None
    cfg = load_coseg_config(config, k=k, layer=layer, image_size=image_size, factorizer=factorizer,
                            threshold=threshold, seed=seed, object_factors=factors)
    folder = Path(images)
    if not folder.is_dir():
        raise DataError(f"--images: {'not a folder' if folder.exists() else 'no such folder'}: {folder}")
    set_threads()
    t0 = time.perf_counter()
    backbone = load_model(config).backbone
    t_model = time.perf_counter() - t0
    report = cosegment(folder, backbone=backbone, config=cfg, masks=masks, part_masks=part_masks, parts=parts,
                       compare=compare, joint=joint, concepts=concepts, save_concepts=save_concepts, out=out,
                       device=device, progress=progress)
    report.model_seconds = t_model
    return report


def run_demo(out: PathLike = "demo_out", *, net: Optional[DescriptorNet] = None, n_objects: int = 8,
             views: int = 6, distractors: int = 12, image_size: int = 256, top: int = 8,
             source: Optional[str] = None, seed: int = 0, progress: bool = True,
             config: Optional[PathLike] = None, device: Optional[str] = None) -> DemoResult:
    """The built-in demo (:func:`retrieval.demo.demo`): what ``tools/demo.py`` runs. The model is
    ``net``, else ``config``'s (a YAML settings file or a checkpoint), else the default one;
    ``device``: ``cpu`` | ``cuda`` | ``cuda:N``; both checked before anything is written."""
    resolve_device(device)
    net = net or (load_model(config) if config else build_network())
    return demo(net, out, n_objects=n_objects, views=views, distractors=distractors, image_size=image_size,
                top=top, source=source, seed=seed, progress=progress, device=device)


def store_index_graph(out: PathLike, k: int, progress: bool = True) -> Dict[str, Any]:
    """Build the k-NN graph (``k`` neighbours) of the index at ``out`` and store it there
    (``tools/index.py --graph K``; kept up to date by later additions, prunes and compactions):
    ``{"k", "count", "bytes", "bytes_per_image", "seconds"}``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DataError(f"--graph takes the neighbours per image (≥ 1), got {k}")
    t0 = time.perf_counter()
    index = ImageIndex.load(out)
    try:
        g = index.store_graph(k, progress=progress)
    finally:
        index.close()
    return {"k": g.k, "count": g.n, "bytes": g.nbytes(), "bytes_per_image": g.nbytes() / max(g.n, 1),
            "seconds": time.perf_counter() - t0}


def store_index_local_features(out: PathLike, max_features: int = 1000, max_side: int = 640,
                               progress: bool = True) -> Dict[str, Any]:
    """Compute and store the RootSIFT features (at most ``max_features`` per image, detected at a
    long side of ``max_side``) of the ids of the index at ``out`` that have none stored
    (``tools/index.py --local-features N``; ``--rerank sv`` reads them instead of the files):
    ``{"described", "bytes", "bytes_per_image", "seconds"}``."""
    t0 = time.perf_counter()
    index = ImageIndex.load(out)
    try:
        n = index.store_local_features(max_features, max_side, progress=progress)
        index = ImageIndex.load(out)
        size = index.local_features_bytes()
        total = index.ntotal
    finally:
        index.close()
    return {"described": n, "bytes": size, "bytes_per_image": size / max(total, 1),
            "seconds": time.perf_counter() - t0}
def run_export(onnx: PathLike, *, model: Optional[PathLike] = None, config: Optional[PathLike] = None,
               opset: int = 17, image_size: Optional[int] = None,
               scales: Optional[Sequence[float]] = None) -> ExportReport:
    """Write ``model`` (a checkpoint of gemseg, cirtorch or dirtorch, or a YAML config; default:
    ``config``'s model, else the default model) to ``onnx``
    (:func:`retrieval.model.onnx_export.export_onnx`); ``image_size`` / ``scales`` become the
    exported model's defaults. Returns its :class:`~retrieval.model.onnx_export.ExportReport`."""
    settings = load_settings(config)
    net = with_input(_model(settings, model), image_size, scales)
    if not isinstance(net, DescriptorNet):
        raise ConfigError(f"{model} is already an ONNX model")
    return export_onnx(net, onnx, opset=opset)
def run_dedup(images: Optional[PathLike] = None, index: Optional[PathLike] = None, *,
              model: Optional[PathLike] = None, config: Optional[PathLike] = None, device: Optional[str] = None,
              thresholds: Optional[PathLike] = None, near: Optional[float] = None,
              similar: Optional[float] = None, slack: Optional[float] = None,
              min_inliers: Optional[int] = None, calibrate: bool = False, verify: bool = True,
              html: Optional[PathLike] = None, png: Optional[PathLike] = None, csv: Optional[PathLike] = None,
              move_to: Optional[PathLike] = None, move_kinds: Sequence[str] = ("exact", "near"),
              undo: Optional[PathLike] = None, progress: bool = True,
              batch_size: Optional[int] = None, workers: Optional[int] = None) -> Dict[str, Any]:
    """Find the duplicates of a collection (``tools/dedup.py``, :mod:`retrieval.dedup`).

    The images are ``images`` (a folder or list file, described now; with ``index`` too, added
    to that index first, incrementally) or the index folder ``index`` (its stored descriptors, its
    model). Thresholds: ``thresholds`` (a file), else the one the index or checkpoint keeps, else
    the defaults; ``calibrate`` measures them now on generated edits of the built-in photos
    (:mod:`retrieval.dedup.calibration`) and stores them there; ``near`` / ``similar`` / ``slack`` / ``min_inliers`` override. ``verify``: confirm
    near pairs by spatial verification when it is available. Writes ``html`` / ``png`` / ``csv``;
    ``move_to``: moves the copies of the groups of ``move_kinds`` there, with a manifest;
    ``undo``: moves the files of that manifest back (nothing else is done then).
    Returns ``{"groups": [{"kind", "keep", "images": [{"path", "score", "reason"}]}], "counts", ...}``.
    """
    if undo is not None:
        if images is not None or index is not None or move_to is not None:
            raise DataError("--undo MANIFEST moves files back and does nothing else; give no --images/--index/--move-to")
        return {"undo": undo_moves(undo, progress=progress).as_dict()}
    if images is None and index is None:
        raise DataError("give --images DIR (a folder or list of images) or --index DIR (an index folder)")
    bad = sorted(set(move_kinds) - set(DEDUP_KINDS))
    if bad:
        raise DataError(f"--move-kinds: unknown kind {bad[0]}; choose from {', '.join(DEDUP_KINDS)}")
    if move_to is not None and images is not None and Path(images).is_dir() and \
            Path(images).resolve() in [Path(move_to).resolve(), *Path(move_to).resolve().parents]:
        raise DataError("--move-to must be outside the --images folder (the copies would be found again)")
    settings = load_settings(config)
    device = device or settings.extract.device
    resolve_device(device)
    failures: List[Any] = []
    root: Optional[Path] = Path(images).resolve() if images is not None and Path(images).is_dir() else None
    if index is not None:
        if images is not None:
            run_index(images, index, config=config, model=model, device=device, batch_size=batch_size,
                      workers=workers, progress=progress)
        idx = ImageIndex.load(index)
        net = model_for_index(idx, model)
        removed = set(idx.removed_ids.tolist())
        live = [i for i in range(idx.ntotal) if i not in removed]
        paths_all = idx.paths.many(live)
        there = [k for k, p in enumerate(paths_all) if Path(p).is_file()]
        failures += [(paths_all[k], "file missing (indexed, no longer on disk)") for k in range(len(live))
                     if k not in set(there)]
        paths = [paths_all[k] for k in there]
        X = idx.rows(np.asarray([live[k] for k in there], np.int64))
    else:
        net = _model(settings, model)
        listing = scan_images(images)
        ex = extract_descriptors(net, [str(p.resolve()) for p in listing.paths], device=device, progress=progress,
                                 batch_size=batch_size or settings.extract.batch_size,
                                 workers=workers if workers is not None else settings.extract.workers,
                                 desc="dedup: describe")
        paths, X = ex.paths, ex.descriptors
        failures += list(listing.skipped) + list(ex.failures)
    fp = net.fingerprint()
    where = thresholds_file(thresholds, index, model)
    if calibrate:
        chosen = calibrate_model(net, device=device, progress=progress,
                                 min_inliers=min_inliers if min_inliers is not None else Thresholds().min_inliers)
        if where is None:
            raise DataError("--calibrate stores the thresholds with the model: give --index DIR, a checkpoint "
                            "(--model), or --thresholds FILE")
        save_thresholds(where, fp, chosen)
    else:
        stored = load_thresholds(where, fp) if where is not None else None
        chosen = stored or Thresholds(source="default" if fp == DEFAULT_FINGERPRINT else
                                      "default of another model: run --calibrate for thresholds of this one")
    chosen = chosen.with_overrides(near=near, similar=similar, slack=slack, min_inliers=min_inliers)
    verifier = near_verifier() if verify else None
    result = find_duplicates(paths, X, chosen, verifier=verifier, progress=progress, failures=failures)
    out = result.as_dict()
    out["thresholds"]["file"] = str(where) if where is not None else None
    out["fingerprint"] = fp
    written = []
    for target, write in ((html, write_dedup_html), (png, write_dedup_png), (csv, write_dedup_csv)):
        if target:
            written.append(str(write(target, result)))
    out["written"] = written
    if move_to is not None:
        copies = [m.path for g in result.groups if g.kind in move_kinds for m in g.members[1:]]
        out["moves"] = move_files(sorted(set(copies)), move_to, root=root, progress=progress,
                                  note=f"gemseg dedup: copies of {', '.join(move_kinds)} groups").as_dict()
    return out
