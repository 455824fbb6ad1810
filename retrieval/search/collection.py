"""Index a photo collection and search it: the library calls behind ``tools/index.py`` and
``tools/search.py``."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from retrieval.core.config import to_dict
from retrieval.core.image_listing import scan_images
from retrieval.model.network import DescriptorNet
from retrieval.search.factory import auto_factory, is_auto
from retrieval.search.index import ImageIndex, IndexConfig, check_index_target
from retrieval.search.paths_store import Stat
from retrieval.search.query import QueryLike, QueryPath, as_queries, query_steps
from retrieval.search.rerank.coseg import CosegRerankOptions
from retrieval.search.rerank.registry import StepsLike, parse_steps
from retrieval.search.rerank.step import Box
from retrieval.search.resumable_extract import discard_work, extract_resumably

PathLike = Union[str, Path]


@dataclass
class IndexReport:
    """What :func:`index_images` did: counts, skipped files with reasons, timing, and how the images
    were described (``image_size`` px, ``scales``, ``whitening``: the model's settings).

    added: new files described; updated: files whose size or mtime changed since they were
    indexed, described again (their old entry removed); total: ids a search can return;
    vanished: indexed files that no longer exist and stay in the index (``prune`` drops them);
    resumed: images described by an interrupted earlier run, reused
    (:mod:`retrieval.search.resumable_extract`).
    """

    folder: str
    added: int
    already_indexed: int
    total: int
    failures: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    factory: str = "Flat"
    fingerprint: str = ""
    updated: int = 0
    pruned: int = 0
    image_size: int = 0
    scales: List[float] = field(default_factory=list)
    whitening: str = "none"
    vanished: int = 0
    resumed: int = 0

    @property
    def described(self) -> str:
        """``"320 px, scales 1, 0.7071, 0.5, whitening lw"``."""
        return (f"{self.image_size} px, scales {', '.join(f'{s:g}' for s in self.scales)}, "
                f"whitening {self.whitening}")

    def as_dict(self) -> Dict[str, Any]:
        return {
            "index": self.folder, "added": self.added, "already_indexed": self.already_indexed,
            "updated": self.updated, "pruned": self.pruned,
            "total": self.total, "skipped": len(self.failures),
            "failures": [{"path": p, "reason": r} for p, r in self.failures],
            "seconds": round(self.seconds, 3), "factory": self.factory, "fingerprint": self.fingerprint,
            "image_size": self.image_size, "scales": list(self.scales), "whitening": self.whitening,
            "vanished": self.vanished, "resumed": self.resumed,
        }


def open_or_create_index(net: DescriptorNet, folder: PathLike, config: Optional[IndexConfig] = None,
                         model_source: Optional[str] = None, n_images: int = 0,
                         memory_budget: Union[str, int] = "4G") -> ImageIndex:
    """The index at ``folder`` if it exists (it must have been built by ``net``), else a new one.

    A new index whose factory is ``auto`` gets the one :func:`~retrieval.search.factory.auto_factory`
    chooses for ``n_images`` descriptors of the model's dimension under ``memory_budget`` (Flat below
    10⁴, HNSW32 up to 10⁶ while it fits); the choice is stored with the index, so that later
    additions keep it. An existing index keeps its own factory."""
    folder = Path(folder)
    fp = net.fingerprint()
    check_index_target(folder)
    if (folder / "meta.json").is_file():
        return ImageIndex.load_built_by(folder, fp, "use that model, or write a new index with --out")
    config = config or IndexConfig()
    if is_auto(config.factory):
        config = replace(config, factory=auto_factory(n_images, net.dim, memory_budget))
    index = ImageIndex(net.dim, config.factory, to_dict(net.config), fp, config)
    index.model_source = str(model_source) if model_source else None
    return index


def file_stat(path: str) -> Stat:
    """``(size in bytes, mtime in ns)`` of a file, None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def vanished_files(index: ImageIndex, listed: Sequence[str]) -> List[int]:
    """Live saved ids of ``index`` whose file no longer exists. Only files that the scan did not
    list (``listed``, resolved paths) are looked at on disk, so re-indexing the same folder costs
    no extra file-system call per file that is still there."""
    seen = set(listed)
    return [i for i, p, _ in index.saved_rows(live_only=True) if p not in seen and not os.path.exists(p)]


def index_images(net: DescriptorNet, source: PathLike, out: PathLike, *,
                 index_config: Optional[IndexConfig] = None, batch_size: int = 8,
                 workers: Optional[int] = None, device: Optional[str] = None,
                 progress: bool = True, model_source: Optional[PathLike] = None,
                 prune: bool = False, memory_budget: Union[str, int] = "4G") -> IndexReport:
    """Describe the images of ``source`` (folder or list file) and add them to the index at ``out``
    (created when missing). Images already in it are skipped unless their size or modification
    time changed: those are described again and their old entry removed. ``prune`` also removes
    every indexed file that no longer exists. Bad files, and files of formats that are not read
    (``unsupported format .heic``), are skipped and listed in the report; a compressed factory is
    checked against the collection size before any image is described. A new index is written to a
    temporary folder and renamed; an existing one receives only what is new. An interrupted run
    resumes: what it described is kept beside ``out`` and reused
    (:mod:`retrieval.search.resumable_extract`). Indexed files that no longer exist are counted
    (``vanished``) when not pruned. A factory of ``auto`` is chosen for the collection's size under
    ``memory_budget`` when the index is created (:func:`open_or_create_index`)."""
    t0 = time.perf_counter()
    listing = scan_images(source)
    paths = [str(p.resolve()) for p in listing.paths]
    index = open_or_create_index(net, out, index_config,
                                 str(Path(model_source).resolve()) if model_source else None,
                                 n_images=len(paths), memory_budget=memory_budget)
    stats = {p: file_stat(p) for p in paths}
    known = index.find(paths)
    new = [p for p in paths if p not in known]
    changed = [p for p in paths if p in known and known[p][1] is not None and known[p][1] != stats[p]]
    pruned = index.vanished() if prune else []
    gone = [] if prune else vanished_files(index, paths)
    index.check_size(index.n_live + len(new))  # a compressed factory on too few images fails now, not late
    ex, resumed = extract_resumably(net, new + changed, stats, out, batch_size=batch_size, workers=workers,
                                    device=device, progress=progress, desc="index")
    index.remove([known[p][0] for p in changed] + pruned)
    index.add(ex.descriptors, ex.paths, [stats[p] for p in ex.paths])
    index.save(out)
    discard_work(out)
    done = set(ex.paths)
    return IndexReport(str(out), sum(p in done for p in new), len(paths) - len(new) - len(changed), index.n_live,
                       listing.skipped + ex.failures, time.perf_counter() - t0, index.factory,
                       index.fingerprint or "", updated=sum(p in done for p in changed), pruned=len(pruned),
                       image_size=int(net.config.image_size), scales=[float(x) for x in net.config.scales],
                       whitening=net.config.whitening, vanished=len(gone), resumed=resumed)


def search_images(net: DescriptorNet, index: ImageIndex, queries: Union[QueryLike, Sequence[QueryLike]],
                  top: int = 10, device: Optional[str] = None, boxes: Optional[Sequence[Box]] = None,
                  coseg_rerank: Optional[CosegRerankOptions] = None, steps: StepsLike = None,
                  progress: bool = False, **search_kwargs: Any) -> List[Dict[str, Any]]:
    """Search ``index`` with each query through the query path (:mod:`retrieval.search.query`);
    returns ``[{"query", "hits": [{"rank", "id", "path", "score", "missing"}]}]`` in query order
    (``missing``: the hit's file no longer exists).

    A query is an image file, a PIL image or a numpy array ((H, W, 3) uint8, or float in [0, 1];
    :func:`retrieval.core.images.as_image`), or a :class:`~retrieval.search.query.Query` (by
    stored id or by vector); one query may be given alone. Its ``"query"`` is the path (or
    ``<image i>`` / ``<array i>``). ``boxes`` optionally crops each query to (x1, y1, x2, y2)
    pixels first, as the revisited Oxford/Paris protocol does. ``steps``: re-ranking steps by name
    (``"qe:k=2,coseg:K=20"``, or :class:`~retrieval.search.rerank.step.Reranker` objects;
    :mod:`retrieval.search.rerank`); ``coseg_rerank``: co-segmentation re-ranking of the top K
    after them (:mod:`retrieval.search.rerank.coseg`); ``search_kwargs``: the index's ``nprobe``,
    ``ef_search``, ``rerank`` (exact re-ranking of an approximate index) and ``rerank_k``.
    A bad query image raises ImageError; a model that did not build the index raises
    ModelMismatchError (checked before any image is read)."""
    path = QueryPath(index, net, parse_steps(steps) + query_steps(coseg=coseg_rerank), device=device, search_kwargs=search_kwargs, progress=progress)
    return path.run(as_queries(queries, boxes), top).records()
