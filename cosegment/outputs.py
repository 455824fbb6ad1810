"""The files a co-segmentation run writes: per image an overlay, a mask, a preview (and with parts
a label map), then ``boxes.json`` and ``index.html`` (:func:`write_results`). Every input image
gets its own files, also when stems clash (``rocket.jpg``, ``rocket.JPG``, ``rocket.png``:
:func:`output_names`); overlays and previews are capped at :data:`PREVIEW_MAX_SIDE` pixels and carry
a legend of the factor colours (numbered from 0, as everywhere).

Part label maps (``parts/<stem>.png``, uint8) hold 0 for the background and ``j + 1`` for factor
``j`` (factors are numbered from 0).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from cosegment.render import (
    add_legend,
    heat_overlay,
    label_overlay,
    legend_html,
    mask_preview,
    save_png,
    shrink,
    write_index_html,
)
from cosegment.segmentation import SetResult
from retrieval.core.errors import ImageError
from retrieval.core.images import load_image
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]


#: Long side, in pixels, of the pictures made for looking (overlays, previews, part overlays);
#: masks and part label maps are data and keep the image's size.
PREVIEW_MAX_SIDE = 1024


def output_names(results: Sequence[SetResult]) -> Dict[Tuple[str, int], str]:
    """A distinct file stem for each (set, image index), so every input image gets its own
    outputs: the image stem; where stems clash (compared without case, as on macOS and Windows
    file systems) the set name is put before it (runs of several sets), then the extension after it
    (``rocket_JPG``, ``rocket_png``), then a number (``rocket_jpg-2``)."""
    items = [(r.name, i, p) for r in results for i, p in enumerate(r.paths)]
    several_sets = len({r.name for r in results}) > 1

    def name(set_name: str, p: Path, level: int) -> str:
        parts = [set_name] if level >= 1 and several_sets else []
        parts.append(p.stem)
        if level >= 2:
            parts.append(p.suffix.lstrip(".") or "noext")
        return "_".join(parts)

    level = [0] * len(items)
    names = [name(s, p, 0) for s, _, p in items]
    for _ in range(2):
        counts = Counter(n.lower() for n in names)
        clash = [j for j, n in enumerate(names) if counts[n.lower()] > 1]
        if not clash:
            break
        for j in clash:
            level[j] += 1
            names[j] = name(items[j][0], items[j][2], level[j])
    taken = Counter(n.lower() for n in names)
    seen: Dict[str, int] = {}
    for j, n in enumerate(names):
        if taken[n.lower()] > 1:
            seen[n.lower()] = seen.get(n.lower(), 0) + 1
            if seen[n.lower()] > 1:
                c = seen[n.lower()]
                while f"{n}-{c}".lower() in taken:
                    c += 1
                names[j] = f"{n}-{c}"
                taken[names[j].lower()] += 1
    return {(s, i): n for (s, i, _), n in zip(items, names)}


def write_results(out_dir: PathLike, results: Sequence[SetResult], scores: Optional[Dict[str, Dict[str, Any]]] = None,
                  summary: str = "", max_side: Optional[int] = PREVIEW_MAX_SIDE) -> Dict[str, Any]:
    """Write, for every image (each under its own name, :func:`output_names`):
    ``overlays/<name>.jpg`` (heat maps, one colour per factor, with a legend band: factor numbers
    from 0, the object factors marked), ``masks/<name>.png`` (0/255, image size),
    ``previews/<name>.jpg`` (mask and box), with parts ``parts/<name>.png`` (0 = background,
    j + 1 = factor j; image size) and ``parts/<name>_overlay.jpg`` (with the legend); then
    ``boxes.json`` and ``index.html`` (a colour legend per set). Overlays and previews are for
    looking: their long side is at most ``max_side`` (None: image size). Returns the boxes
    document (``images``: per output name its image path, set, box and size)."""
    out = Path(out_dir)
    for sub in ("overlays", "masks", "previews"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if any(r.labels is not None for r in results):
        (out / "parts").mkdir(parents=True, exist_ok=True)
    names = output_names(results)
    rows: List[Dict[str, Any]] = []
    doc: Dict[str, Any] = {"images": {}}
    for r in results:
        k = int(r.heat[0].shape[0]) if r.heat else 0
        for i, p in enumerate(r.paths):
            stem = names[(r.name, i)]
            try:
                img = np.asarray(load_image(p))
            except ImageError:
                continue
            if img.shape[:2] != r.heat[i].shape[1:]:
                continue
            save_png(out / "masks" / f"{stem}.png", (r.masks[i] * 255).astype(np.uint8))
            planes = [r.heat[i], r.masks[i]] + ([r.labels[i]] if r.labels is not None else [])
            small, heat, mask, *rest = shrink(img, max_side, *planes)
            scale = rest.pop()
            box = None if r.boxes[i] is None else [round(v * scale) for v in r.boxes[i]]
            save_png(out / "overlays" / f"{stem}.jpg", add_legend(heat_overlay(small, heat), k, r.object_factors))
            save_png(out / "previews" / f"{stem}.jpg", mask_preview(small, mask, box))
            row = {"name": p.name, "set": r.name, "image": _rel(p, out), "overlay": f"overlays/{stem}.jpg",
                   "preview": f"previews/{stem}.jpg", "mask": f"masks/{stem}.png",
                   "box": list(r.boxes[i]) if r.boxes[i] is not None else None}
            if r.labels is not None:
                save_png(out / "parts" / f"{stem}.png", r.labels[i])
                save_png(out / "parts" / f"{stem}_overlay.jpg",
                         add_legend(label_overlay(small, rest[0]), k, r.object_factors))
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
    legends = {r.name: legend_html(int(r.heat[0].shape[0]) if r.heat else 0, r.object_factors) for r in results}
    write_index_html(out / "index.html", rows, summary=summary, legends=legends)
    return doc


def _rel(p: Path, base: Path) -> str:
    try:
        return os.path.relpath(Path(p).resolve(), base.resolve())
    except ValueError:
        return Path(p).resolve().as_uri()
