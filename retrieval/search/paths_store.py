"""Ids ↔ image paths of an index, in SQLite: opened without reading every path into memory.

One table holds a row per id (the row number of its descriptor), with the file's size and
modification time when it was described (to notice a changed file) and a ``removed`` flag (a
re-described or vanished file: its id is never returned again, its descriptor stays where it is).
A small key/value table holds what the index commits with the rows (row count, segments), so
one SQLite transaction is the commit point of an addition.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.errors import DataError

PathLike = Union[str, Path]
Stat = Optional[Tuple[int, int]]  # (size in bytes, mtime in ns), None when unknown
_CHUNK = 500  # parameters per IN (...) query (SQLite allows 999 on old builds)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER, mtime_ns INTEGER,
    removed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class PathStore:
    """The ``paths.sqlite`` file of an index folder. Writes happen in :meth:`commit` only."""

    def __init__(self, path: PathLike, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise DataError(f"{self.path} not found; the index is damaged (rebuild it)")
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            if create:
                self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM info").fetchone()
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path} is not a readable path store ({e}); rebuild the index") from None

    def close(self) -> None:
        self._db.close()

    # -- reading ---------------------------------------------------------------------------------
    def info(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM info WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def count(self) -> int:
        """Committed rows (ids ``0 .. count-1``)."""
        return int(self.info("count", 0))

    def get(self, i: int) -> str:
        row = self._db.execute("SELECT path FROM images WHERE id=?", (int(i),)).fetchone()
        if row is None:
            raise IndexError(i)
        return row[0]

    def get_many(self, ids: Sequence[int]) -> List[str]:
        """Paths of ``ids`` (any order, repeats allowed)."""
        found: Dict[int, str] = {}
        uniq = sorted({int(i) for i in ids})
        for a in range(0, len(uniq), _CHUNK):
            part = uniq[a:a + _CHUNK]
            q = f"SELECT id, path FROM images WHERE id IN ({','.join('?' * len(part))})"
            found.update(self._db.execute(q, part).fetchall())
        return [found[int(i)] for i in ids]

    def iter_rows(self, start: int = 0, stop: Optional[int] = None,
                  live_only: bool = False) -> Iterator[Tuple[int, str, Stat]]:
        """``(id, path, (size, mtime_ns) or None)`` in id order, streamed."""
        stop = self.count() if stop is None else stop
        q = "SELECT id, path, size, mtime_ns FROM images WHERE id>=? AND id<?"
        q += " AND removed=0" if live_only else ""
        for i, p, s, m in self._db.execute(q + " ORDER BY id", (start, stop)):
            yield i, p, (None if s is None else (s, m))

    def lookup(self, paths: Iterable[str]) -> Dict[str, Tuple[int, Stat]]:
        """``path → (id, stat)`` of the live rows among ``paths``."""
        out: Dict[str, Tuple[int, Stat]] = {}
        paths = list(paths)
        n = self.count()
        for a in range(0, len(paths), _CHUNK):
            part = paths[a:a + _CHUNK]
            q = (f"SELECT path, id, size, mtime_ns FROM images WHERE removed=0 AND id<? "
                 f"AND path IN ({','.join('?' * len(part))})")
            for p, i, s, m in self._db.execute(q, [n, *part]):
                out[p] = (i, None if s is None else (s, m))
        return out

    def removed_ids(self) -> np.ndarray:
        """(r,) int64 ids flagged removed."""
        rows = self._db.execute("SELECT id FROM images WHERE removed=1 AND id<?", (self.count(),)).fetchall()
        return np.array(sorted(r[0] for r in rows), dtype=np.int64)

    # -- writing -------------------------------------------------------------------------------
    def commit(self, start: int, paths: Iterable[str], stats: Iterable[Stat], removed: Iterable[int] = (),
               info: Optional[Dict[str, Any]] = None) -> None:
        """In one transaction: rows ``start, start+1, ...`` for ``paths``, ``removed`` ids
        flagged, ``info`` keys set (``count`` always). Rows at or past ``start`` left by an
        interrupted commit are replaced. The path index is created after the first bulk load
        (faster than maintaining it while inserting)."""
        n = [0]

        def rows() -> Iterator[Tuple[int, str, Optional[int], Optional[int]]]:
            for p, st in zip(paths, stats):
                yield (start + n[0], p, *(st if st is not None else (None, None)))
                n[0] += 1

        with self._db:  # one transaction
            self._db.execute("DELETE FROM images WHERE id>=?", (start,))
            self._db.executemany("INSERT INTO images (id, path, size, mtime_ns) VALUES (?, ?, ?, ?)", rows())
            rem = sorted({int(i) for i in removed})
            self._db.executemany("UPDATE images SET removed=1 WHERE id=?", ((i,) for i in rem))
            items = dict(info or {}, count=start + n[0])
            self._db.executemany("INSERT OR REPLACE INTO info (key, value) VALUES (?, ?)",
                                 ((k, json.dumps(v)) for k, v in items.items()))
            self._db.execute("CREATE INDEX IF NOT EXISTS images_path ON images(path)")
