"""Folders of real-photo classes for training tests and benchmarks: the two halves of 8
scikit-image colour photos are 16 classes, each view a random 60–90 % crop of its half, rotated
±10°, brightness and contrast ±25 %, long side ``size`` (the shape of folder users train on).

View ``v`` of a class draws from ``default_rng([pi, half, v])`` (``[seed, pi, half, v]`` with a
``seed``), so it is the same whatever range of views is asked for: disjoint ranges give disjoint views.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageEnhance

#: The scikit-image photos whose halves are the classes.
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "motorcycle"]


def photo_views(root: Path, views: Sequence[int], size: int = 96, seed: Optional[int] = None) -> Path:
    """Write ``root/<photo>_<half>/v<v>.jpg`` for every class and every ``v`` in ``views``; returns ``root``."""
    import skimage.data as skd  # the demo extra; only this generator needs it

    root = Path(root)
    for pi, name in enumerate(PHOTOS):
        arr = skd.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skd, name)()
        img = Image.fromarray(np.asarray(arr)).convert("RGB")
        W, H = img.size
        for half in range(2):
            region = img.crop((half * W // 2, 0, (half + 1) * W // 2, H))
            rw, rh = region.size
            d = root / f"{name}_{half}"
            d.mkdir(parents=True, exist_ok=True)
            for v in views:
                r = np.random.default_rng([pi, half, v] if seed is None else [seed, pi, half, v])
                s = r.uniform(0.6, 0.9)
                cw, ch = int(rw * s), int(rh * s)
                x0, y0 = int(r.integers(0, rw - cw + 1)), int(r.integers(0, rh - ch + 1))
                im = region.crop((x0, y0, x0 + cw, y0 + ch)).rotate(r.uniform(-10, 10), resample=Image.BILINEAR)
                im = ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(r.uniform(0.75, 1.25)))
                im = im.enhance(r.uniform(0.75, 1.25))
                k = size / max(im.size)
                im.resize((max(1, round(im.size[0] * k)), max(1, round(im.size[1] * k))), Image.BILINEAR).save(
                    d / f"v{v}.jpg", quality=90)
    return root
