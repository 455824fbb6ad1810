"""A folder of descriptor shards: what sharded extraction writes and index building reads.

Layout::

    DESC_DIR/
      manifest.json              format, the model's config and fingerprint, dim, shard size,
                                 source; once every shard is written: images and shards in all
      shards/000000/             one folder per shard of ``shard_size`` consecutive source paths,
        descriptors.npy            (n, D) float32, the n paths that loaded, in source order
        paths.json                 those n paths
        stats.npy                  (n, 2) int64: each file's size in bytes and mtime in ns
        skipped.json               [{"path", "reason"}] for the files that did not load
      shards/000001/ ...

A shard folder is written to a temporary folder and renamed, so it exists only when complete; a
re-run skips it. The manifest ties the folder to one model: another model is refused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.errors import ConfigError, DataError, ModelMismatchError
from retrieval.core.io import atomic_dir, atomic_path, read_json
from retrieval.search import descriptor_file

PathLike = Union[str, Path]
FORMAT = "gemseg-descriptors"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Shard:
    """One complete shard: descriptors (n, D) float32 (memory-mapped), paths (n), stats (n, 2)
    int64 (size, mtime_ns), skipped [(path, reason)]."""

    number: int
    descriptors: np.ndarray
    paths: List[str]
    stats: np.ndarray
    skipped: List[Tuple[str, str]]


class ShardDir:
    """The descriptor folder ``folder`` (see the module doc)."""

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)

    # -- manifest ----------------------------------------------------------------------------------
    def manifest(self) -> Dict[str, Any]:
        path = self.folder / MANIFEST
        if not path.is_file():
            raise DataError(f"{self.folder} holds no descriptors (no {MANIFEST}); make them with tools/extract.py")
        m = read_json(path, str(path))
        if m.get("format") != FORMAT:
            raise DataError(f"{path} is not a gemseg descriptor manifest")
        return m

    def write_manifest(self, manifest: Dict[str, Any]) -> None:
        with atomic_path(self.folder / MANIFEST) as tmp:
            Path(tmp).write_text(json.dumps(dict(manifest, format=FORMAT, version=VERSION), indent=2))

    def open_for(self, model: Dict[str, Any], fingerprint: str, dim: int, shard_size: int, source: str) -> None:
        """Create the folder for this model, or check that the one there was made by it with the
        same shard size (a re-run resumes it)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"{self.folder} is a file; choose another --out")
        if (self.folder / MANIFEST).is_file():
            m = self.manifest()
            if m.get("fingerprint") != fingerprint:
                raise ModelMismatchError(
                    f"{self.folder} holds descriptors of another model (fingerprint {m.get('fingerprint')}, "
                    f"this model {fingerprint}); use that model or another --out")
            if m.get("shard_size") != shard_size:
                raise ConfigError(f"{self.folder} was made with --shard-size {m.get('shard_size')}; "
                                  f"resume with the same size or use another --out")
            return
        if self.folder.is_dir() and any(not f.name.startswith(".") and f.name not in (MANIFEST, "shards")
                                        for f in self.folder.iterdir()):  # (another rank may be starting)
            raise DataError(f"{self.folder} exists and is not a descriptor folder; choose another --out")
        self.write_manifest({"model": model, "fingerprint": fingerprint, "dim": dim,
                             "shard_size": shard_size, "source": source, "images": None, "shards": None})

    # -- shards ------------------------------------------------------------------------------------
    def shard_dir(self, k: int) -> Path:
        return self.folder / "shards" / f"{k:06d}"

    def is_complete(self, k: int) -> bool:
        return (self.shard_dir(k) / "skipped.json").is_file()

    def write_shard(self, k: int, descriptors: np.ndarray, paths: Sequence[str], stats: np.ndarray,
                    skipped: Sequence[Tuple[str, str]]) -> None:
        """Write shard ``k`` atomically (a temporary folder renamed into place)."""
        X = np.ascontiguousarray(descriptors, dtype=np.float32)
        self.shard_dir(k).parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(self.shard_dir(k)) as tmp:
            descriptor_file.create(tmp / "descriptors.npy", X.shape[1], [X])
            (tmp / "paths.json").write_text(json.dumps(list(paths)))
            np.save(tmp / "stats.npy", np.asarray(stats, dtype=np.int64).reshape(-1, 2))
            (tmp / "skipped.json").write_text(json.dumps([{"path": p, "reason": r} for p, r in skipped]))

    def read_shard(self, k: int) -> Shard:
        d = self.shard_dir(k)
        if not self.is_complete(k):
            raise DataError(f"shard {k} of {self.folder} is missing; finish it with tools/extract.py (it resumes)")
        try:
            paths = json.loads((d / "paths.json").read_text())
            rows, _, _ = descriptor_file.read_header(d / "descriptors.npy")
            X = descriptor_file.open_rows(d / "descriptors.npy", rows)
            stats = np.load(d / "stats.npy")
            skipped = [(s["path"], s["reason"]) for s in json.loads((d / "skipped.json").read_text())]
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"shard {d} is damaged ({e}); delete it and re-run tools/extract.py") from None
        if X.shape[0] != len(paths) or stats.shape[0] != len(paths):
            raise DataError(f"shard {d} is damaged: {X.shape[0]} descriptors for {len(paths)} paths")
        return Shard(k, X, paths, stats, skipped)

    def shard_rows(self, k: int) -> int:
        """Descriptors in shard ``k`` (read from its file header only)."""
        return descriptor_file.read_header(self.shard_dir(k) / "descriptors.npy")[0]

    def expected_shards(self) -> int:
        """Shards of the whole source, once an extraction listed it to the end."""
        m = self.manifest()
        if m.get("shards") is None:
            raise DataError(f"{self.folder}: the extraction has not listed its whole source yet; "
                            f"finish it with tools/extract.py (it resumes)")
        return int(m["shards"])

    def missing(self) -> List[int]:
        return [k for k in range(self.expected_shards()) if not self.is_complete(k)]

    def check_complete(self) -> int:
        """The number of shards, all complete; otherwise a DataError naming what is missing."""
        n = self.expected_shards()
        miss = self.missing()
        if miss:
            raise DataError(f"{self.folder}: {len(miss)} of {n} shards missing (first: {miss[0]}); "
                            f"finish them with tools/extract.py (it resumes)")
        return n

    def iter_shards(self, numbers: Optional[Sequence[int]] = None) -> Iterator[Shard]:
        for k in (range(self.expected_shards()) if numbers is None else numbers):
            yield self.read_shard(k)
