#!/usr/bin/env python
"""The search server under load, against one ``tools/search.py`` process per query, in one run.

Protocol:

1. **Indexes.** ``--index DIR`` (e.g. the demo's, ``python tools/demo.py --out /tmp/demo``; by
   default a toy collection, ``retrieval.toy``, 96 px, indexed with the default model into
   ``bench_out/serve/``), and a **synthetic** index of ``--synthetic N`` (default 10⁵) unit
   descriptors of the same model (``--synthetic-data``: ``clustered``, ~100 near neighbours
   each, or ``uniform``), built as ``gemseg index --descriptors`` builds (``--synthetic-factory``,
   default ``auto``: the factory it chooses, its search setting tuned to recall@10 0.98; the
   paths name files that do not exist: no image is read, the hits say ``missing``), in
   ``bench_out/serve/``.
2. **Server.** ``tools/serve.py --index DIR --port 0`` in its own process, on loopback, one per
   index; its RSS (``/proc/PID/status``) read after a warm-up (every row once, at every
   concurrency: thread stacks and batch buffers are allocated then), after the load, and with
   ``--repeat`` after a second round of every row (a leak keeps growing; a high-water mark does not);
   as all resident pages, anonymous ones (the process's own memory) and file-backed ones (the
   memory-mapped ``descriptors.npy`` that queries by id read: they grow as random rows are first
   touched, up to the file's size, and are page cache the kernel may drop).
3. **Load.** ``K`` threads (``--clients``, default 1 and 8), each with its own keep-alive
   connection, send searches for ``--seconds T`` per row: by id (JSON ``{"id": random, "top":
   10}``: the stored row, no forward pass), by vector (JSON ``{"vector": a stored row, "top": 10}``)
   and, on the image index, by upload (the bytes of an indexed image, top 10: decode + forward
   pass). Requests/s, p50 / p99 latency and errors (any status ≠ 200) per row.
4. **Baseline.** ``tools/search.py --query-id I --index DIR --json`` as a new process,
   ``--cli-runs`` times per index (median wall time): what answering one query by id costs without
   a server (start Python, import, load the model and the index, search).
5. **Ratios** (same run): CLI seconds / server p50 by id with one client, and requests/s by id
   with the most clients × CLI seconds (queries the server answers in the time the CLI answers one).

    python benchmarks/bench_serve.py                                     # toy index + 10^5 synthetic
    python benchmarks/bench_serve.py --index /tmp/demo/index --synthetic-factory Flat IVF256,Flat --json out.json
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import statistics
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import clustered, markdown_table, unit, write_shards  # noqa: E402
from retrieval.jobs import run_index  # noqa: E402
from retrieval.search.build import build_index_from_shards  # noqa: E402
from retrieval.search.index import ImageIndex  # noqa: E402
from retrieval.toy.collection import make_retrieval_collection  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench_out" / "serve"


def toy_index() -> Path:
    """A small toy collection (96 px) indexed with the default model, cached in bench_out/serve/."""
    index = OUT / "index"
    if not (index / "meta.json").is_file():
        coll = make_retrieval_collection(OUT / "collection", n_objects=6, views=4, distractors=12, image_size=96)
        run_index(coll.images_dir, index, progress=False)
    return index


def synthetic_index(model_index: Path, n: int, factory: str = "auto", data: str = "clustered", seed: int = 0) -> Path:
    """``n`` synthetic unit descriptors under ``model_index``'s model, built the way ``gemseg index
    --descriptors DIR --factory FACTORY`` builds (descriptor shards, then
    :func:`~retrieval.search.build.build_index_from_shards`: ``auto`` picks the factory, the
    search setting is tuned to the default target recall); cached. ``data``: ``clustered``
    (:func:`benchmarks.common.clustered`, ``n // 100`` centres: each row has ~100 near neighbours,
    as views and near-duplicates of one object) or ``uniform`` (uniformly random directions: no
    neighbour structure, on which no approximate index reaches a useful recall)."""
    ref = ImageIndex.load(model_index)
    D, model, fingerprint = ref.dim, ref.model_config, ref.fingerprint
    ref.close()
    out = OUT / f"synthetic-{data}-{n}-{re.sub(r'[^A-Za-z0-9]+', '_', factory)}"
    if (out / "meta.json").is_file():
        have = ImageIndex.load(out)
        ok = have.ntotal == n and have.fingerprint == fingerprint
        have.close()
        if ok:
            return out
    desc = OUT / f"synthetic-{data}-{n}-descriptors"
    shutil.rmtree(out, ignore_errors=True)
    shard, rng = 20_000, np.random.default_rng(seed)

    def block(k: int, m: int) -> np.ndarray:
        if data == "clustered":
            return clustered(m, seed=seed + 1 + k, dim=D, n_centres=max(1, n // 100))
        return unit(rng.standard_normal((m, D)))

    write_shards(desc, (block(k, min(shard, n - a)) for k, a in enumerate(range(0, n, shard))), D, shard, model,
                 fingerprint, lambda i: f"/nonexistent/synthetic/{i:07d}.jpg")
    build_index_from_shards(desc, out, factory=factory, progress=False)
    return out


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """``field`` of ``/proc/PID/status`` in MB: ``VmRSS`` (all resident pages), ``RssAnon`` (the
    process's own memory: a leak grows it) or ``RssFile`` (pages of mapped files, e.g. the
    memory-mapped ``descriptors.npy`` that queries by id read: page cache, bounded by the files)."""
    m = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def memory(pid: int) -> Dict[str, float]:
    """``{"rss", "anon", "file"}`` MB of process ``pid`` (:func:`rss_mb`)."""
    return {"rss": rss_mb(pid), "anon": rss_mb(pid, "RssAnon"), "file": rss_mb(pid, "RssFile")}


def multipart(fields: Dict[str, str], file: Optional[Tuple[str, bytes]]) -> Tuple[bytes, str]:
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    if file:
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{file[0]}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + file[1] + b"\r\n")
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


class Server:
    """``tools/serve.py`` of the checkout ``repo`` on loopback, a free port."""

    def __init__(self, index: Path, env: Dict[str, str], repo: Path = REPO) -> None:
        env = dict(env, PYTHONPATH=str(repo))
        self.proc = subprocess.Popen([sys.executable, str(repo / "tools" / "serve.py"), "--index", str(index),
                                      "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env)
        line = self.proc.stdout.readline()
        m = re.search(r"serving http://([\d.]+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"server did not start: {line!r}")
        self.host, self.port = m.group(1), int(m.group(2))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def load(server: Server, kind: str, clients: int, seconds: float, n_images: int,
         vectors: Sequence[str], upload: Optional[Tuple[str, bytes]]) -> Dict[str, Any]:
    """``clients`` threads searching for ``seconds``: requests/s, p50/p99 and errors."""
    lat: List[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def request(rng: random.Random) -> Tuple[bytes, str]:
        if kind == "id":
            return json.dumps({"id": rng.randrange(n_images), "top": 10}).encode(), "application/json"
        if kind == "vector":
            return vectors[rng.randrange(len(vectors))].encode(), "application/json"
        return multipart({"top": "10"}, upload)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
        mine: List[float] = []
        bad = 0
        while time.perf_counter() < deadline:
            body, ctype = request(rng)
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/search", body, {"Content-Type": ctype})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
            mine.append(time.perf_counter() - t0)
            bad += not ok
        conn.close()
        with lock:
            lat.extend(mine)
            errors[0] += bad

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99
    return {"kind": kind, "clients": clients, "requests": len(lat), "rps": len(lat) / wall, "p50_ms": q[49] * 1000,
            "p99_ms": q[98] * 1000, "errors": errors[0]}


def cli_seconds(index: Path, runs: int, env: Dict[str, str]) -> float:
    """Median wall time of ``tools/search.py --query-id 0 --index INDEX --json`` as a new process."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "tools" / "search.py"), "--query-id", "0", "--index", str(index),
                        "--top", "10", "--json"], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_index(name: str, index: Path, kinds: Sequence[str], clients: Sequence[int], seconds: float,
                cli_runs: int, env: Dict[str, str], repeat: bool = False, repo: Path = REPO) -> Dict[str, Any]:
    """Every row of one index, its RSS before and after, and its CLI baseline."""
    idx = ImageIndex.load(index)
    n = idx.ntotal
    rng = np.random.default_rng(1)
    rows_of = rng.choice(n, size=min(64, n), replace=False)
    X = idx.rows(np.sort(rows_of))
    vectors = [json.dumps({"vector": [float(v) for v in x], "top": 10}) for x in X]
    first = Path(idx.paths[0])
    upload = (first.name, first.read_bytes()) if first.is_file() else None
    idx.close()
    server = Server(index, env, repo)
    try:
        for kind in kinds:  # warm-up: every code path once, at every concurrency
            for k in clients:
                load(server, kind, k, 1.5, n, vectors, upload)
        rss0 = memory(server.proc.pid)
        rows = [load(server, kind, k, seconds, n, vectors, upload) for kind in kinds for k in clients]
        rss1 = memory(server.proc.pid)
        rows += [dict(r, round=2) for r in (load(server, kind, k, seconds, n, vectors, upload)
                                             for kind in kinds for k in clients)] if repeat else []
        rss2 = memory(server.proc.pid)
    finally:
        server.close()
    cli = cli_seconds(index, cli_runs, env)
    by_id_1 = next(r for r in rows if r["kind"] == "id" and r["clients"] == min(clients))
    by_id_k = next(r for r in rows if r["kind"] == "id" and r["clients"] == max(clients))
    return {"name": name, "index": str(index), "images": n, "dim": int(X.shape[1]), "rows": rows,
            "factory": idx.factory, "memory_mb": [rss0, rss1, rss2],
            "cli_seconds": cli,
            "ratio_latency_id": cli / (by_id_1["p50_ms"] / 1000), "ratio_throughput_id": by_id_k["rps"] * cli}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", help="index folder of images (default: a toy index built in bench_out/serve/)")
    ap.add_argument("--synthetic", type=int, default=100_000, help="stored descriptors of the synthetic index (0: none)")
    ap.add_argument("--synthetic-factory", nargs="+", default=["auto"], metavar="FACTORY",
                    help="faiss factories of the synthetic index (default auto: what gemseg index chooses for "
                         "N; e.g. also Flat)")
    ap.add_argument("--synthetic-data", choices=("clustered", "uniform"), default="clustered",
                    help="the synthetic descriptors: clustered (~100 near neighbours each) or uniform (none)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=8.0, help="load per row (bounded)")
    ap.add_argument("--cli-runs", type=int, default=3, help="tools/search.py processes timed per index")
    ap.add_argument("--repeat", action="store_true",
                    help="run every row a second time: RSS after each round (a leak grows in round 2 too)")
    ap.add_argument("--server-repo", type=Path, default=REPO,
                    help="serve with this checkout's tools/serve.py (e.g. a worktree of an earlier commit: "
                         "the change's baseline under the same clients and indexes)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    index = Path(args.index) if args.index else toy_index()
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    results = [bench_index("images", index, ("id", "vector", "upload"), args.clients, args.seconds, args.cli_runs, env,
                           args.repeat, args.server_repo)]
    for factory in args.synthetic_factory if args.synthetic else []:
        syn = synthetic_index(index, args.synthetic, factory, args.synthetic_data)
        results.append(bench_index(f"synthetic {args.synthetic_data} {factory}", syn, ("id", "vector"), args.clients,
                                   args.seconds, args.cli_runs, env, args.repeat, args.server_repo))
    for res in results:
        print(f"\n{res['name']}: {res['index']} ({res['images']} × {res['dim']}-d), {args.seconds:g} s per row")
        print(f"factory {res['factory']}")
        print(markdown_table(["round", "query", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors"],
                             [[r.get("round", 1), r["kind"], r["clients"], r["requests"], r["rps"], r["p50_ms"],
                               r["p99_ms"], r["errors"]] for r in res["rows"]]))
        m = res["memory_mb"][:3 if args.repeat else 2]
        print("server RSS / anonymous / file-backed MB after the warm-up (every row's concurrency), after the "
              "load" + (", after a second round: " if args.repeat else ": ") +
              ", ".join(f"{x['rss']:.0f} / {x['anon']:.0f} / {x['file']:.0f}" for x in m))
        print(f"tools/search.py --query-id, one process per query: {res['cli_seconds']:.2f} s (median of {args.cli_runs})")
        print(f"by id: {res['ratio_latency_id']:.0f}x faster per query (CLI s / p50, 1 client), "
              f"{res['ratio_throughput_id']:.0f} queries answered per CLI query ({max(args.clients)} clients)")
    if args.json:
        Path(args.json).write_text(json.dumps({"clients": args.clients, "seconds": args.seconds, "results": results},
                                              indent=2))
    return 1 if any(r["errors"] for res in results for r in res["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
