"""Where matching pairs come from: class folders, a CSV of pairs, the SfM-120k pickle, or labels.

Every source becomes a :class:`PairSet`: the image paths, a cluster id per image (images of one
cluster may match; images of different clusters never do, so mining takes negatives only from other
clusters) and the matching pairs ``(qidx[i], pidx[i])`` that training draws its queries and
positives from.

Sources:

* **class folders** ``DIR/<class>/**/*.jpg`` — one cluster per sub-folder; any two images of a
  class match (every ordered pair, sampled down to ``max_pairs_per_class`` for big classes).
* **CSV** with rows ``query,positive[,cluster]`` (an optional header row ``query,positive,...``);
  relative paths are taken relative to the CSV's folder. Without a cluster column the clusters are
  the connected components of the pair graph.
* **SfM-120k pickle** (Radenović et al.): ``{"train": {"cids", "cluster", "qidxs", "pidxs"},
  "val": {...}}`` with images at ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>``.
* **labels** from anywhere (e.g. clustering pseudo-labels): :meth:`PairSet.from_labels`.
"""
from __future__ import annotations

import csv
import io
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.errors import DataError, ImageError
from retrieval.core.image_listing import list_images
from retrieval.core.images import IMAGE_EXTENSIONS, load_image

PathLike = Union[str, Path]

#: Default cap on the ordered pairs taken from one class (a class of k images has k·(k−1)).
MAX_PAIRS_PER_CLASS = 1000


@dataclass
class PairSet:
    """Images, their cluster ids and the matching pairs.

    Attributes:
        paths: N image paths.
        labels: ``(N,)`` int64 cluster id per image (≥ 0); equal ids may match, different ids never.
        qidx: ``(M,)`` int64 query image of each matching pair.
        pidx: ``(M,)`` int64 positive image of each pair (``labels[qidx] == labels[pidx]``).
        source: a short description of where the pairs came from (for logs).
        class_names: optional name of each cluster id (class folder names).
    """

    paths: List[Path]
    labels: np.ndarray
    qidx: np.ndarray
    pidx: np.ndarray
    source: str = ""
    class_names: Optional[Dict[int, str]] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.paths = [Path(p) for p in self.paths]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.qidx = np.asarray(self.qidx, dtype=np.int64).reshape(-1)
        self.pidx = np.asarray(self.pidx, dtype=np.int64).reshape(-1)
        n = len(self.paths)
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have one entry per path ({n}), got {self.labels.shape}")
        if self.qidx.shape != self.pidx.shape:
            raise ValueError(f"qidx {self.qidx.shape} and pidx {self.pidx.shape} differ in length")
        for name, a in (("qidx", self.qidx), ("pidx", self.pidx)):
            if a.size and (a.min() < 0 or a.max() >= n):
                raise ValueError(f"{name} holds indices outside 0..{n - 1}")

    # ------------------------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self.paths)

    @property
    def n_pairs(self) -> int:
        return int(self.qidx.size)

    @property
    def n_classes(self) -> int:
        return int(np.unique(self.labels).size)

    def __len__(self) -> int:
        return self.n_pairs

    def summary(self) -> str:
        """One line: images, clusters, pairs, source."""
        return (f"{self.n_images} images, {self.n_classes} clusters, {self.n_pairs} matching pairs"
                + (f" ({self.source})" if self.source else ""))

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_labels(
        cls,
        paths: Sequence[PathLike],
        labels: Sequence[int],
        max_pairs_per_class: Optional[int] = MAX_PAIRS_PER_CLASS,
        seed: int = 0,
        source: str = "labels",
        class_names: Optional[Dict[int, str]] = None,
    ) -> "PairSet":
        """Pairs from a cluster id per image: every ordered pair of distinct images of a cluster.

        Args:
            paths: N image paths.
            labels: ``(N,)`` int cluster ids; a cluster of one image gives no pair (it still serves
                as a negative for the others).
            max_pairs_per_class: a cluster with more ordered pairs than this keeps a random sample
                of this many (seeded); ``None`` keeps them all.
            seed: the sampling seed.
        """
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.shape != (len(paths),):
            raise ValueError(f"labels must have one entry per path ({len(paths)}), got {labels.shape}")
        rng = np.random.default_rng(seed)
        qs: List[np.ndarray] = []
        ps: List[np.ndarray] = []
        order = np.argsort(labels, kind="stable")
        uniq, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        for start, k in zip(starts, counts):
            if k < 2:
                continue
            members = order[start:start + k]
            n_pairs = k * (k - 1)
            if max_pairs_per_class is not None and n_pairs > max_pairs_per_class:
                flat = rng.choice(n_pairs, size=max_pairs_per_class, replace=False)
                flat.sort()
            else:
                flat = np.arange(n_pairs)
            a = flat // (k - 1)
            b = flat % (k - 1)
            b = b + (b >= a)  # skip the diagonal: b runs over the k-1 members other than a
            qs.append(members[a])
            ps.append(members[b])
        qidx = np.concatenate(qs) if qs else np.empty(0, np.int64)
        pidx = np.concatenate(ps) if ps else np.empty(0, np.int64)
        return cls(list(paths), labels, qidx, pidx, source=source, class_names=class_names)

    def subset(self, keep: np.ndarray) -> "PairSet":
        """The images selected by ``keep`` (bool mask ``(N,)`` or index array), pairs remapped;
        pairs that lose an image are dropped."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            if keep.shape != (self.n_images,):
                raise ValueError("keep mask must have one entry per image")
            idx = np.flatnonzero(keep)
        else:
            idx = np.unique(keep.astype(np.int64))
        remap = np.full(self.n_images, -1, dtype=np.int64)
        remap[idx] = np.arange(idx.size)
        q, p = remap[self.qidx], remap[self.pidx]
        ok = (q >= 0) & (p >= 0)
        return PairSet([self.paths[i] for i in idx], self.labels[idx], q[ok], p[ok],
                       source=self.source, class_names=self.class_names)

    def split(self, val_fraction: float, seed: int = 0, min_val_classes: int = 2,
              by: str = "classes") -> Tuple["PairSet", "PairSet"]:
        """Hold out a validation part: ``(train, val)``.

        ``by="classes"``: a fraction ``val_fraction`` of the clusters that have a matching pair (at
        least ``min_val_classes`` of them, at least one left for training) goes to ``val`` with all
        their images; clusters without pairs stay in ``train`` as negatives. Validation then
        measures retrieval of objects never seen in training.

        ``by="images"``: in every cluster of at least 4 images, ``val_fraction`` of its images
        (at least 2, leaving at least 2) go to ``val``; each part keeps the pairs whose two images
        it holds. Validation then measures retrieval of unseen views of trained objects.

        ``val_fraction = 0`` returns ``(self, empty)``.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if by not in ("classes", "images"):
            raise ValueError(f"split by 'classes' or 'images', not {by!r}")
        paired = np.unique(self.labels[self.qidx])
        if val_fraction == 0.0 or paired.size == 0:
            return self, self.subset(np.zeros(self.n_images, dtype=bool))
        rng = np.random.default_rng(seed)
        if by == "images":
            is_val = np.zeros(self.n_images, dtype=bool)
            for c in np.unique(self.labels):
                members = np.flatnonzero(self.labels == c)
                k = members.size
                if k < 4:
                    continue
                n_val = min(k - 2, max(2, int(round(val_fraction * k))))
                is_val[rng.choice(members, size=n_val, replace=False)] = True
            if not is_val.any():
                raise DataError("cannot hold out images for validation: no class has 4 or more images")
            return self.subset(~is_val), self.subset(is_val)
        n_val = max(min_val_classes, int(round(val_fraction * paired.size)))
        if n_val >= paired.size:
            raise DataError(
                f"cannot hold out {n_val} of {paired.size} classes for validation and still train; "
                "add classes or lower val_fraction"
            )
        val_classes = rng.choice(paired, size=n_val, replace=False)
        is_val = np.isin(self.labels, val_classes)
        return self.subset(~is_val), self.subset(is_val)

    def ground_truth(self) -> Tuple[np.ndarray, List[Dict[str, np.ndarray]]]:
        """Every-image-a-query ground truth for evaluation within this set.

        Returns ``(queries (Q,) int64, gnd)``: the images with at least one other image of their
        cluster, and per query ``{"ok": others of its cluster, "junk": [itself]}`` indexing
        ``paths`` (the query is also in the database and is ignored there).
        """
        queries: List[int] = []
        gnd: List[Dict[str, np.ndarray]] = []
        for i, lab in enumerate(self.labels):
            same = np.flatnonzero(self.labels == lab)
            ok = same[same != i]
            if ok.size:
                queries.append(i)
                gnd.append({"ok": ok, "junk": np.array([i], dtype=np.int64)})
        return np.asarray(queries, dtype=np.int64), gnd


# ----------------------------------------------------------------------------------------------
# Class folders
# ----------------------------------------------------------------------------------------------
def pairs_from_folders(
    root: PathLike, max_pairs_per_class: Optional[int] = MAX_PAIRS_PER_CLASS, seed: int = 0
) -> PairSet:
    """One class per sub-folder of ``root`` (images found recursively inside each).

    Raises:
        DataError: ``root`` is missing or not a folder, holds no class sub-folders with images,
            a class has a single image, or every class has one image.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: training data folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of class sub-folders (DIR/<class>/*.jpg)")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths: List[Path] = []
    labels: List[int] = []
    names: Dict[int, str] = {}
    singles: List[str] = []
    for d in class_dirs:
        try:
            imgs = list_images(d)
        except DataError:
            continue  # a sub-folder without images is not a class
        c = len(names)
        names[c] = d.name
        if len(imgs) < 2:
            singles.append(d.name)
        paths.extend(imgs)
        labels.extend([c] * len(imgs))
    if not names:
        loose = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
        hint = " (it holds images directly: put each class in its own sub-folder)" if loose else ""
        raise DataError(f"{root}: no class sub-folders with images (expected DIR/<class>/*.jpg){hint}")
    if len(singles) == len(names):
        raise DataError(f"{root}: every class has a single image; training needs at least 2 images per class")
    if singles:
        more = f" and {len(singles) - 1} more" if len(singles) > 1 else ""
        raise DataError(
            f"{root}: class '{singles[0]}'{more} has a single image; add a matching image or move it out"
        )
    if len(names) < 2:
        raise DataError(f"{root}: only one class ('{names[0]}'); training needs at least 2 classes")
    return PairSet.from_labels(paths, labels, max_pairs_per_class, seed,
                               source=f"class folders {root}", class_names=names)


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------
def _components(n: int, q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Connected components of the graph with edges (q[i], p[i]): ``(n,)`` int64 labels 0..C-1."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(q.tolist(), p.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    _, lab = np.unique(roots, return_inverse=True)
    return lab.astype(np.int64)


def pairs_from_csv(csv_path: PathLike, root: Optional[PathLike] = None, check_files: bool = True) -> PairSet:
    """Pairs from a CSV of ``query,positive[,cluster]`` rows.

    Args:
        csv_path: the CSV file (a first row starting with ``query`` is a header).
        root: folder that relative paths are relative to (default: the CSV's folder).
        check_files: refuse a row naming a missing file.

    Raises:
        DataError: missing CSV, a malformed row, a missing image, a pair of an image with itself,
            an image given two different clusters, or no rows.
    """
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: pairs CSV not found")
    base = Path(root).expanduser() if root is not None else csv_path.parent
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_path}: cannot read ({e})") from None
    index: Dict[str, int] = {}
    paths: List[Path] = []
    qs: List[int] = []
    ps: List[int] = []
    clusters: Dict[int, str] = {}
    with_cluster: Optional[bool] = None

    def image_id(name: str, line: int) -> int:
        p = Path(name).expanduser()
        p = p if p.is_absolute() else base / p
        key = os.path.normpath(str(p))
        if key not in index:
            if check_files and not p.is_file():
                raise DataError(f"{csv_path}:{line}: image file not found: {p}")
            index[key] = len(paths)
            paths.append(p)
        return index[key]

    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        row = [c.strip() for c in row]
        if not row or all(not c for c in row) or row[0].startswith("#"):
            continue
        if line == 1 and row[0].lower() in ("query", "q", "anchor"):
            continue
        if len(row) not in (2, 3) or not row[0] or not row[1]:
            raise DataError(f"{csv_path}:{line}: expected 'query,positive[,cluster]', got {','.join(row)!r}")
        if with_cluster is None:
            with_cluster = len(row) == 3
        elif with_cluster != (len(row) == 3):
            raise DataError(f"{csv_path}:{line}: some rows have a cluster column and some do not")
        a, b = image_id(row[0], line), image_id(row[1], line)
        if a == b:
            raise DataError(f"{csv_path}:{line}: an image paired with itself: {paths[a]}")
        if with_cluster:
            for i in (a, b):
                if clusters.setdefault(i, row[2]) != row[2]:
                    raise DataError(
                        f"{csv_path}:{line}: {paths[i]} is in cluster '{clusters[i]}' and '{row[2]}'"
                    )
        qs.append(a)
        ps.append(b)
    if not qs:
        raise DataError(f"{csv_path}: no pairs (expected rows 'query,positive[,cluster]')")
    q = np.asarray(qs, dtype=np.int64)
    p = np.asarray(ps, dtype=np.int64)
    if with_cluster:
        names = sorted(set(clusters.values()))
        ids = {n: i for i, n in enumerate(names)}
        labels = np.array([ids[clusters[i]] for i in range(len(paths))], dtype=np.int64)
        class_names = {i: n for n, i in ids.items()}
    else:
        labels = _components(len(paths), q, p)
        class_names = None
    if np.unique(labels).size < 2:
        raise DataError(f"{csv_path}: all images are in one cluster; negatives need at least 2 clusters")
    return PairSet(paths, labels, q, p, source=f"pairs CSV {csv_path}", class_names=class_names)


# ----------------------------------------------------------------------------------------------
# SfM-120k
# ----------------------------------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (a pickle can otherwise run code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def cid_to_path(cid: str, ims_root: PathLike) -> Path:
    """SfM-120k image id → ``ims_root/cid[-2:]/cid[-4:-2]/cid[-6:-4]/cid``."""
    return Path(ims_root) / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid


def pairs_from_sfm(
    pkl_path: PathLike, ims_root: Optional[PathLike] = None, split: str = "train", check_files: bool = True
) -> PairSet:
    """Pairs from the public SfM-120k pickle (``retrieval-SfM-120k.pkl``).

    Args:
        pkl_path: the pickle.
        ims_root: its image folder (default: ``ims`` beside the pickle).
        split: ``"train"`` or ``"val"``.
        check_files: refuse the set when images are missing (reports how many, and the first).
    """
    pkl_path = Path(pkl_path).expanduser()
    if not pkl_path.is_file():
        raise DataError(f"{pkl_path}: SfM-120k pickle not found")
    ims = Path(ims_root).expanduser() if ims_root is not None else pkl_path.parent / "ims"
    try:
        with open(pkl_path, "rb") as f:
            db_all = _SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{pkl_path}: not a readable SfM-120k pickle ({e})") from None
    if not isinstance(db_all, dict) or split not in db_all:
        raise DataError(f"{pkl_path}: no '{split}' part (expected keys 'train' and 'val')")
    db = db_all[split]
    missing_keys = [k for k in ("cids", "cluster", "qidxs", "pidxs") if k not in db]
    if missing_keys:
        raise DataError(f"{pkl_path}: '{split}' lacks {', '.join(missing_keys)}")
    cids = [c.decode() if isinstance(c, bytes) else str(c) for c in db["cids"]]
    paths = [cid_to_path(c, ims) for c in cids]
    if check_files:
        if not ims.is_dir():
            raise DataError(f"{ims}: SfM-120k image folder not found (pass ims_root)")
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{ims}: {len(missing)} of {len(paths)} SfM-120k images missing, e.g. {missing[0]}")
    labels = np.asarray(db["cluster"], dtype=np.int64)
    return PairSet(paths, labels, np.asarray(db["qidxs"]), np.asarray(db["pidxs"]),
                   source=f"SfM-120k {split} {pkl_path}")


# ----------------------------------------------------------------------------------------------
# Dispatch and checks
# ----------------------------------------------------------------------------------------------
def load_pairs(
    source: PathLike,
    kind: str = "auto",
    ims_root: Optional[PathLike] = None,
    split: str = "train",
    max_pairs_per_class: Optional[int] = MAX_PAIRS_PER_CLASS,
    seed: int = 0,
) -> PairSet:
    """Load pairs from ``source``: ``kind`` ``"folders"``, ``"csv"``, ``"sfm"`` or ``"auto"`` (a
    folder → class folders, ``.csv`` → CSV, ``.pkl`` → SfM-120k)."""
    src = Path(source).expanduser()
    if kind == "auto":
        if src.is_dir():
            kind = "folders"
        elif src.suffix.lower() == ".csv":
            kind = "csv"
        elif src.suffix.lower() in (".pkl", ".pickle"):
            kind = "sfm"
        elif not src.exists():
            raise DataError(f"{src}: training data not found")
        else:
            raise DataError(f"{src}: expected a folder of classes, a .csv of pairs or an SfM-120k .pkl")
    if kind == "folders":
        return pairs_from_folders(src, max_pairs_per_class, seed)
    if kind == "csv":
        return pairs_from_csv(src, root=ims_root)
    if kind == "sfm":
        return pairs_from_sfm(src, ims_root, split)
    raise DataError(f"unknown pairs source kind {kind!r} (auto, folders, csv, sfm)")


def drop_unreadable(
    pairs: PairSet,
    workers: int = 4,
    loader: Optional[Callable[[Path], object]] = None,
    max_side: Optional[int] = 64,
) -> Tuple[PairSet, List[Tuple[Path, str]]]:
    """Decode every image once; return the pairs without the unreadable ones and the failures.

    Args:
        pairs: the pair set.
        workers: decoding threads.
        loader: ``loader(path)`` raising :class:`~retrieval.core.errors.ImageError` for a bad file
            (default :func:`retrieval.core.images.load_image` with a reduced-scale JPEG decode).
        max_side: the decode-size hint of the default loader.

    Returns:
        ``(kept, failures)`` with failures a list of ``(path, reason)``.
    """
    if loader is None:
        def loader(p: Path) -> object:
            return load_image(p, max_side=max_side)

    def check(p: Path) -> Optional[str]:
        try:
            loader(p)
            return None
        except ImageError as e:
            return e.reason
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
            return f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        reasons = list(ex.map(check, pairs.paths))
    bad = np.array([r is not None for r in reasons], dtype=bool)
    failures = [(pairs.paths[i], reasons[i]) for i in np.flatnonzero(bad)]
    if not bad.any():
        return pairs, failures
    return pairs.subset(~bad), failures
