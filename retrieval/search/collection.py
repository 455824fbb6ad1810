"""Index a photo collection and search it: the library calls behind ``tools/index.py`` and
``tools/search.py``."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.config import to_dict
from retrieval.core.images import crop_box, list_images, load_image
from retrieval.model.network import DescriptorNet
from retrieval.search.extract import describe_pil, extract_descriptors
from retrieval.search.index import ImageIndex, IndexConfig, check_index_target

PathLike = Union[str, Path]


@dataclass
class IndexReport:
    """What :func:`index_images` did: counts, skipped files with reasons, timing, and how the images
    were described (``image_size`` px, ``scales``, ``whitening``: the model's settings)."""

    folder: str
    added: int
    already_indexed: int
    total: int
    failures: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    factory: str = "Flat"
    fingerprint: str = ""
    image_size: int = 0
    scales: List[float] = field(default_factory=list)
    whitening: str = "none"

    @property
    def described(self) -> str:
        """``"320 px, scales 1, 0.7071, 0.5, whitening lw"``."""
        return (f"{self.image_size} px, scales {', '.join(f'{s:g}' for s in self.scales)}, "
                f"whitening {self.whitening}")

    def as_dict(self) -> Dict[str, Any]:
        return {
            "index": self.folder, "added": self.added, "already_indexed": self.already_indexed,
            "total": self.total, "skipped": len(self.failures),
            "failures": [{"path": p, "reason": r} for p, r in self.failures],
            "seconds": round(self.seconds, 3), "factory": self.factory, "fingerprint": self.fingerprint,
            "image_size": self.image_size, "scales": list(self.scales), "whitening": self.whitening,
        }


def open_or_create_index(net: DescriptorNet, folder: PathLike, config: Optional[IndexConfig] = None,
                         model_source: Optional[str] = None) -> ImageIndex:
    """The index at ``folder`` if it exists (it must have been built by ``net``), else a new one."""
    folder = Path(folder)
    fp = net.fingerprint()
    check_index_target(folder)
    if (folder / "meta.json").is_file():
        return ImageIndex.load_built_by(folder, fp, "use that model, or write a new index with --out")
    config = config or IndexConfig()
    index = ImageIndex(net.dim, config.factory, to_dict(net.config), fp, config)
    index.model_source = str(model_source) if model_source else None
    return index


def index_images(net: DescriptorNet, source: PathLike, out: PathLike, *,
                 index_config: Optional[IndexConfig] = None, batch_size: int = 8,
                 workers: Optional[int] = None, device: Optional[str] = None,
                 progress: bool = True, model_source: Optional[PathLike] = None) -> IndexReport:
    """Describe the images of ``source`` (folder or list file) and add them to the index at ``out``
    (created when missing; images already in it are skipped). Bad files are skipped and listed in
    the report; the index folder is replaced atomically."""
    t0 = time.perf_counter()
    paths = [str(p.resolve()) for p in list_images(source)]
    index = open_or_create_index(net, out, index_config,
                                 str(Path(model_source).resolve()) if model_source else None)
    known = set(index.paths)
    new = [p for p in paths if p not in known]
    ex = extract_descriptors(net, new, batch_size=batch_size, workers=workers, device=device,
                             progress=progress, desc="index")
    index.add(ex.descriptors, ex.paths)
    index.save(out)
    return IndexReport(str(out), len(ex.paths), len(paths) - len(new), index.ntotal, ex.failures,
                       time.perf_counter() - t0, index.factory, index.fingerprint or "",
                       int(net.config.image_size), [float(x) for x in net.config.scales], net.config.whitening)


def search_images(net: DescriptorNet, index: ImageIndex, queries: Sequence[PathLike], top: int = 10,
                  device: Optional[str] = None, boxes: Optional[Sequence[Optional[Sequence[float]]]] = None,
                  **search_kwargs: Any) -> List[Dict[str, Any]]:
    """Search ``index`` with each query image; returns ``[{"query", "hits": [{"rank", "path",
    "score"}]}]``. ``boxes`` optionally crops each query to (x1, y1, x2, y2) pixels first, as the
    revisited Oxford/Paris protocol does. A bad query image raises ImageError; a model that did not
    build the index raises ModelMismatchError (checked before any image is read)."""
    fp = net.fingerprint()
    index.check_model(fp, net.dim)
    boxes = list(boxes) if boxes is not None else [None] * len(queries)
    Q = np.stack([describe_pil(net, crop_box(load_image(q), b), device=device) for q, b in zip(queries, boxes)])
    scores, ids = index.search(Q, top, fingerprint=fp, **search_kwargs)
    results = []
    for q, srow, irow in zip(queries, scores, ids):
        hits = [{"rank": r + 1, "path": index.paths[i], "score": float(s)}
                for r, (s, i) in enumerate(zip(srow, irow)) if i >= 0]
        results.append({"query": str(q), "hits": hits})
    return results
