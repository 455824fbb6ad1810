"""The files a co-segmentation run writes: per image an overlay, a mask, a preview (and with parts
a label map), then ``boxes.json`` and ``index.html`` (:func:`write_results`).

Part label maps (``parts/<stem>.png``, uint8) hold 0 for the background and ``j + 1`` for factor
``j`` (factors are numbered from 0).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from cosegment.render import heat_overlay, label_overlay, mask_preview, save_png, write_index_html
from cosegment.segmentation import SetResult
from retrieval.core.errors import ImageError
from retrieval.core.images import load_image
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]


def output_names(results: Sequence[SetResult]) -> Dict[Tuple[str, int], str]:
    """File stem for each (set, image index): the image stem, or ``<set>_<stem>`` if two images
    of the run share a stem."""
    stems = [p.stem for r in results for p in r.paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return {(r.name, i): (f"{r.name}_{p.stem}" if p.stem in dup else p.stem)
            for r in results for i, p in enumerate(r.paths)}


def write_results(out_dir: PathLike, results: Sequence[SetResult], scores: Optional[Dict[str, Dict[str, Any]]] = None,
                  summary: str = "") -> Dict[str, Any]:
    """Write, for every image: ``overlays/<stem>.jpg`` (heat maps, one colour per concept),
    ``masks/<stem>.png`` (0/255, image size), ``previews/<stem>.jpg`` (mask and box), with parts
    ``parts/<stem>.png`` (0 = background, j + 1 = factor j) and ``parts/<stem>_overlay.jpg``; then
    ``boxes.json`` and ``index.html``. Returns the boxes document."""
    out = Path(out_dir)
    for sub in ("overlays", "masks", "previews"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if any(r.labels is not None for r in results):
        (out / "parts").mkdir(parents=True, exist_ok=True)
    names = output_names(results)
    rows: List[Dict[str, Any]] = []
    doc: Dict[str, Any] = {"images": {}}
    for r in results:
        for i, p in enumerate(r.paths):
            stem = names[(r.name, i)]
            try:
                img = np.asarray(load_image(p))
            except ImageError:
                continue
            if img.shape[:2] != r.heat[i].shape[1:]:
                continue
            save_png(out / "overlays" / f"{stem}.jpg", heat_overlay(img, r.heat[i]))
            save_png(out / "masks" / f"{stem}.png", (r.masks[i] * 255).astype(np.uint8))
            save_png(out / "previews" / f"{stem}.jpg", mask_preview(img, r.masks[i], r.boxes[i]))
            row = {"name": p.name, "set": r.name, "image": _rel(p, out), "overlay": f"overlays/{stem}.jpg",
                   "preview": f"previews/{stem}.jpg", "mask": f"masks/{stem}.png",
                   "box": list(r.boxes[i]) if r.boxes[i] is not None else None}
            if r.labels is not None:
                save_png(out / "parts" / f"{stem}.png", r.labels[i])
                save_png(out / "parts" / f"{stem}_overlay.jpg", label_overlay(img, r.labels[i]))
                row["parts"] = f"parts/{stem}_overlay.jpg"
            rows.append(row)
            doc["images"][stem] = {"image": str(p), "set": r.name, "box": row["box"],
                                   "size": [int(r.sizes[i][1]), int(r.sizes[i][0])]}
    doc["box_format"] = "x0, y0, x1, y1 in pixels of the original image (x1, y1 exclusive); null = empty mask"
    with atomic_path(out / "boxes.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    if scores:
        for row in rows:
            s = scores.get(row["set"])
            if s and "jaccard" in s:
                row["score"] = f"set Jaccard {s['jaccard']:.3f}"
    write_index_html(out / "index.html", rows, summary=summary)
    return doc


def _rel(p: Path, base: Path) -> str:
    try:
        return os.path.relpath(Path(p).resolve(), base.resolve())
    except ValueError:
        return Path(p).resolve().as_uri()
