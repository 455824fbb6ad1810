"""Local features as data, with no torch and no OpenCV: one image's (:class:`LocalFeatures`) and
those of consecutive ids packed into flat arrays (:class:`PackedFeatures`), what the index folder
stores (``tools/index.py --local-features``) and :mod:`retrieval.search.index_folder` reads and writes.

They are computed by :mod:`retrieval.search.local_features` (RootSIFT, backbone features), which
loads OpenCV and torch; keeping the data apart lets the index folder (and a build from descriptor
shards, :mod:`retrieval.search.build`) load without them.

Compact storage: :meth:`LocalFeatures.compact` keeps the strongest ``n`` features (they are
stored strongest first) as float16 — about ``n · (2 d + 8)`` bytes, 264 kB for 1000 RootSIFT
features (float16 descriptors, float32 positions).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.io import atomic_path

#: SIFT's descriptor length.
SIFT_DIM = 128


@dataclass
class LocalFeatures:
    """Local features of one image (module docstring).

    xy: (n, 2) float32 keypoint positions in the original image's pixels.
    desc: (n, d) float32 descriptors (RootSIFT for SIFT: non-negative, unit L2 norm), strongest first.
    size: (w, h) of the original image.
    """

    xy: np.ndarray
    desc: np.ndarray
    size: Tuple[int, int]

    def __post_init__(self) -> None:
        self.xy = np.asarray(self.xy, dtype=np.float32).reshape(-1, 2)
        self.desc = np.asarray(self.desc, dtype=np.float32)
        if self.desc.ndim != 2 or self.desc.shape[0] != self.xy.shape[0]:
            raise ValueError(f"{self.xy.shape[0]} keypoints but descriptors of shape {self.desc.shape}")
        self.size = (int(self.size[0]), int(self.size[1]))

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    @property
    def dim(self) -> int:
        return int(self.desc.shape[1])

    def compact(self, max_features: int) -> Tuple[np.ndarray, np.ndarray]:
        """The first ``max_features`` (the strongest) as ``(xy (n, 2) float32, desc (n, d) float16)``:
        positions stay float32 (a float16 position is off by up to 2 px at 4000 px)."""
        n = max(0, min(int(max_features), len(self)))
        return self.xy[:n].astype(np.float32), self.desc[:n].astype(np.float16)

    @classmethod
    def empty(cls, size: Tuple[int, int], dim: int = SIFT_DIM) -> "LocalFeatures":
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.float32), size)


@dataclass
class PackedFeatures:
    """The local features of ``n`` consecutive ids packed into flat arrays (what the index folder
    stores, ``tools/index.py --local-features``): the features of the ``j``-th id are rows
    ``offsets[j]:offsets[j+1]`` of ``xy`` (float32) and ``desc`` (float16); ``sizes[j]`` its image's
    (w, h), (−1, −1) when it had none (unreadable, or removed). ``max_features`` / ``max_side``:
    how they were computed (:func:`sift_features`)."""

    offsets: np.ndarray
    xy: np.ndarray
    desc: np.ndarray
    sizes: np.ndarray
    max_features: int
    max_side: int

    FILES = ("offsets", "xy", "desc", "sizes")

    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    def nbytes(self) -> int:
        return int(sum(getattr(self, n).nbytes for n in self.FILES))

    def get(self, j: int, max_features: Optional[int] = None) -> Optional[LocalFeatures]:
        """The ``j``-th id's features (its strongest ``max_features``), ``None`` when it has none."""
        w, h = (int(v) for v in self.sizes[j])
        if w < 0:
            return None
        a, b = int(self.offsets[j]), int(self.offsets[j + 1])
        if max_features is not None:
            b = min(b, a + int(max_features))
        return LocalFeatures(np.asarray(self.xy[a:b], np.float32), np.asarray(self.desc[a:b], np.float32), (w, h))

    @classmethod
    def pack(cls, features: Sequence[Optional[LocalFeatures]], max_features: int, max_side: int,
             dim: int = SIFT_DIM) -> "PackedFeatures":
        """Pack one :class:`LocalFeatures` (or ``None``) per id, each capped to ``max_features``."""
        counts = [0 if f is None else min(len(f), int(max_features)) for f in features]
        offsets = np.zeros(len(features) + 1, np.int64)
        offsets[1:] = np.cumsum(counts)
        xy = np.zeros((int(offsets[-1]), 2), np.float32)
        desc = np.zeros((int(offsets[-1]), dim), np.float16)
        sizes = np.full((len(features), 2), -1, np.int32)
        for j, (f, c) in enumerate(zip(features, counts)):
            if f is None:
                continue
            sizes[j] = f.size
            xy[offsets[j]:offsets[j] + c], desc[offsets[j]:offsets[j] + c] = f.compact(c)
        return cls(offsets, xy, desc, sizes, int(max_features), int(max_side))

    def select(self, keep: np.ndarray) -> "PackedFeatures":
        """The features of the ids at positions ``keep`` ((m,) int64), packed again (compaction)."""
        return PackedFeatures.pack([self.get(int(j)) for j in keep], self.max_features, self.max_side,
                                   int(self.desc.shape[1]))

    def save(self, folder: Union[str, Path]) -> None:
        """Write the arrays as ``.npy`` files into ``folder`` (created; each through a rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.FILES:
            with atomic_path(folder / f"{name}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, getattr(self, name))

    @classmethod
    def load(cls, folder: Union[str, Path], max_features: int, max_side: int) -> "PackedFeatures":
        """Read what :meth:`save` wrote (memory-mapped)."""
        folder = Path(folder)
        arrays = [np.load(folder / f"{name}.npy", mmap_mode="r") for name in cls.FILES]
        return cls(*arrays, int(max_features), int(max_side))
