#!/usr/bin/env python
"""The search server under load, against one ``tools/search.py`` process per query, in one run.

Protocol:

1. **Index.** ``--index DIR`` (e.g. the demo's, ``python tools/demo.py --out /tmp/demo``), or by
   default a toy collection (``retrieval.toy``, 96 px) indexed with the default model into
   ``bench_out/serve/``.
2. **Server.** ``tools/serve.py --index DIR --port 0`` in its own process, on loopback; its RSS
   (``/proc/PID/status``) is read after a warm-up and again after the load.
3. **Load.** ``--clients K`` threads, each with its own keep-alive connection, send searches for
   ``--seconds T`` per kind: by id (a random indexed image, top 10) and by upload (the bytes of an
   indexed image, top 10). Requests/s, p50 / p99 latency and errors (any status ≠ 200) per kind.
4. **Baseline.** ``tools/search.py --query FILE --index DIR --json`` as a new process, ``--cli-runs``
   times (median wall time): what answering one query cost before the server.
   Then one client alone by id for T/2 seconds: the latency of a query when nothing queues.
5. **Ratios** (same run): CLI seconds / server p50 latency by id with one client, and requests/s by
   id with K clients × CLI seconds (queries the server answers in the time the CLI answers one).

    python benchmarks/bench_serve.py                                   # toy index, 4 clients, 10 s per kind
    python benchmarks/bench_serve.py --index /tmp/demo/index --clients 4 --seconds 20 --json out.json
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table  # noqa: E402
from retrieval.jobs import run_index  # noqa: E402
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


def rss_mb(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def multipart(fields: Dict[str, str], file: Optional[Tuple[str, bytes]]) -> Tuple[bytes, str]:
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    if file:
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{file[0]}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + file[1] + b"\r\n")
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def load(host: str, port: int, kind: str, clients: int, seconds: float, n_images: int,
         upload: Tuple[str, bytes]) -> Dict[str, Any]:
    """K threads searching for ``seconds``: latencies (s) and error count."""
    lat: List[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(host, port, timeout=120)
        mine: List[float] = []
        bad = 0
        while time.perf_counter() < deadline:
            if kind == "id":
                body, ctype = multipart({"id": str(rng.randrange(n_images)), "top": "10"}, None)
            else:
                body, ctype = multipart({"top": "10"}, upload)
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/search", body, {"Content-Type": ctype})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=120)
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
    return {"kind": kind, "requests": len(lat), "rps": len(lat) / wall, "p50_ms": q[49] * 1000,
            "p99_ms": q[98] * 1000, "errors": errors[0]}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", help="index folder (default: a toy index built in bench_out/serve/)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0, help="load per kind of query (bounded)")
    ap.add_argument("--cli-runs", type=int, default=3, help="tools/search.py processes timed")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    index = Path(args.index) if args.index else toy_index()
    paths = json.loads((index / "paths.json").read_text())
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    server = subprocess.Popen([sys.executable, str(REPO / "tools" / "serve.py"), "--index", str(index), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = server.stdout.readline()
        m = re.search(r"serving http://([\d.]+):(\d+)", line)
        if not m:
            raise SystemExit(f"server did not start: {line!r}")
        host, port = m.group(1), int(m.group(2))
        upload = (Path(paths[0]).name, Path(paths[0]).read_bytes())
        load(host, port, "id", 1, 2.0, len(paths), upload)  # warm-up
        load(host, port, "upload", 1, 1.0, len(paths), upload)
        rss0 = rss_mb(server.pid)
        rows = [load(host, port, kind, args.clients, args.seconds, len(paths), upload) for kind in ("id", "upload")]
        single = load(host, port, "id", 1, args.seconds / 2, len(paths), upload)
        single["kind"] = "id, 1 client"
        rows.append(single)
        rss1 = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    cli = []
    for _ in range(args.cli_runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "tools" / "search.py"), "--query", paths[0], "--index", str(index),
                        "--json"], env=env, check=True, capture_output=True)
        cli.append(time.perf_counter() - t0)
    cli_s = statistics.median(cli)
    by_id = rows[0]
    doc = {"index": str(index), "images": len(paths), "clients": args.clients, "seconds": args.seconds,
           "load": rows, "rss_mb_before": rss0, "rss_mb_after": rss1, "cli_seconds": cli_s,
           "ratio_latency_id": cli_s / (single["p50_ms"] / 1000), "ratio_throughput_id": by_id["rps"] * cli_s}
    print(f"index {index} ({len(paths)} images), {args.clients} clients, {args.seconds:g} s per kind")
    print(markdown_table(["query", "requests", "req/s", "p50 ms", "p99 ms", "errors"],
                         [[r["kind"], r["requests"], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]] for r in rows]))
    print(f"\nserver RSS {rss0:.0f} MB before the load, {rss1:.0f} MB after")
    print(f"tools/search.py, one process per query: {cli_s:.2f} s (median of {len(cli)})")
    print(f"by id: {doc['ratio_latency_id']:.0f}x faster per query (CLI s / p50 with 1 client), "
          f"{doc['ratio_throughput_id']:.0f} queries answered per CLI query ({args.clients} clients: req/s x CLI s)")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
