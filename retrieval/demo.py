"""The built-in demo: make a small collection, index it, search it, show the hits.

Objects cut from real photos (scikit-image's samples: a cat, a coffee cup, a rocket, an astronaut,
a motorcycle...) are pasted, in several views (scale, rotation, perspective, occlusion, colour,
blur), onto real textures and other photos, with distractor images that hold none of them. Each
query is one view of an object; the demo searches the database with it using the default model and
scores the ranking with the revisited protocol (queries cropped to the object's box; Easy / Medium /
Hard mAP).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from retrieval.core.backbone import resolve_device
from retrieval.evaluation.metrics import revisited_eval
from retrieval.loading import load_model
from retrieval.model.network import DescriptorNet, build_network
from retrieval.search.collection import index_images, search_images
from retrieval.search.hit_pages import write_hits_html, write_hits_png
from retrieval.search.index import ImageIndex
from retrieval.toy.collection import ToyCollection, make_retrieval_collection

PathLike = Union[str, Path]


@dataclass
class DemoResult:
    collection: ToyCollection
    results: List[Dict[str, Any]]
    report: Dict[str, Dict[str, float]]
    index_seconds: float
    html: Path
    png: Path


def run_demo(out: PathLike = "demo_out", *, net: Optional[DescriptorNet] = None, n_objects: int = 8,
             views: int = 6, distractors: int = 12, image_size: int = 256, top: int = 8,
             source: Optional[str] = None, seed: int = 0, progress: bool = True,
             config: Optional[PathLike] = None, device: Optional[str] = None) -> DemoResult:
    """Generate the demo collection under ``out/collection``, index it into ``out/index`` and
    search it with every query; writes ``out/hits.html`` and ``out/hits.png``. The model is
    ``net``, else ``config``'s (a YAML settings file or a checkpoint), else the default one;
    ``device``: ``cpu`` | ``cuda`` | ``cuda:N`` (checked before anything is written)."""
    resolve_device(device)
    out = Path(out)
    if source is None:
        source = "photos" if importlib.util.find_spec("skimage") is not None else "synthetic"
    coll = make_retrieval_collection(out / "collection", n_objects=n_objects, views=views,
                                     distractors=distractors, image_size=image_size, seed=seed,
                                     source=source)
    net = net or (load_model(config) if config else build_network())
    index_dir = out / "index"
    if index_dir.exists():
        import shutil

        shutil.rmtree(index_dir)  # the collection was regenerated: its old index is stale
    rep = index_images(net, coll.images_dir, index_dir, progress=progress, device=device)
    index = ImageIndex.load(index_dir)
    # queries are cropped to their object's box, as in the revisited Oxford/Paris protocol
    results = search_images(net, index, coll.query_paths, top=index.ntotal, device=device,
                            boxes=[g.get("bbx") for g in coll.gnd])
    pos = {p: i for i, p in enumerate(coll.db_paths)}
    ranks = np.array([[pos[h["path"]] for h in r["hits"]] for r in results], dtype=np.int64)
    report = revisited_eval(ranks, coll.gnd)
    shown = [{"query": r["query"], "hits": r["hits"][:top]} for r in results]
    html = write_hits_html(out / "hits.html", shown, title="gemseg demo: each query and its top hits")
    png = write_hits_png(out / "hits.png", shown, size=128)
    return DemoResult(coll, shown, report, rep.seconds, html, png)
