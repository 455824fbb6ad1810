"""The built-in demo: make a small collection, index it, search it, show the hits.

Objects cut from real photos (scikit-image's samples: a cat, a coffee cup, a rocket, an astronaut,
a motorcycle...) are pasted, in several views (scale, rotation, perspective, occlusion, colour,
blur), onto real textures and other photos, with distractor images that hold none of them. Each
query is one view of an object; the demo searches the database with it using the default model and
scores the ranking with the revisited protocol (queries cropped to the object's box; Easy / Medium /
Hard mAP). :func:`retrieval.jobs.run_demo` (what ``tools/demo.py`` and ``make demo`` run) checks
the device, resolves the model and calls :func:`demo`.
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from retrieval.evaluation.metrics import revisited_eval
from retrieval.model.network import DescriptorNet
from retrieval.search.collection import index_images, search_images
from retrieval.search.hit_pages import write_hits_html, write_hits_png
from retrieval.search.index import ImageIndex
from retrieval.toy.collection import ToyCollection, make_retrieval_collection

PathLike = Union[str, Path]


@dataclass
class DemoResult:
    """The demo's collection, each query's top hits (``{"query", "hits"}``), the revisited
    Easy / Medium / Hard report, the seconds indexing took, and the hit pages written."""

    collection: ToyCollection
    results: List[Dict[str, Any]]
    report: Dict[str, Dict[str, float]]
    index_seconds: float
    html: Path
    png: Path


def demo(net: DescriptorNet, out: PathLike = "demo_out", *, n_objects: int = 8, views: int = 6,
         distractors: int = 12, image_size: int = 256, top: int = 8, source: Optional[str] = None, seed: int = 0,
         progress: bool = True, device: Optional[str] = None) -> DemoResult:
    """Generate the demo collection under ``out/collection`` (objects from real photos when
    scikit-image is installed, else generated ones, unless ``source`` says), index it with ``net``
    into ``out/index`` and search it with every query (cropped to its object's box); writes the
    ``top`` hits of each as ``out/hits.html`` and ``out/hits.png``."""
    out = Path(out)
    if source is None:
        source = "photos" if importlib.util.find_spec("skimage") is not None else "synthetic"
    coll = make_retrieval_collection(out / "collection", n_objects=n_objects, views=views,
                                     distractors=distractors, image_size=image_size, seed=seed,
                                     source=source)
    index_dir = out / "index"
    if index_dir.exists():
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
