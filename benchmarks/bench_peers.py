#!/usr/bin/env python
"""gemseg against the tools people would pick instead: autofaiss for an index under a memory
budget; a plain torch loop and onnxruntime for extraction. One run per table, ratios first.

**Index under a budget** (``--only index``). The same descriptors are built into an index by

* gemseg: ``tools/index.py --descriptors D --factory auto --memory-budget B`` (in RAM) and the same
  with ``--on-disk`` (inverted lists memory-mapped), each in a child process;
* autofaiss: ``autofaiss.build_index(max_index_memory_usage=B, metric_type="ip")`` with its other
  defaults, and with ``should_be_memory_mappable=True`` (its counterpart of ``--on-disk``), each in
  a child process of its own virtual environment (``benchmarks/.peers-venv``, created on first
  use: autofaiss pins numpy < 2, which the project's environment cannot hold; pinned there too:
  pyarrow < 20, as later ones need numpy ≥ 2, and faiss-cpu < 1.13, as autofaiss 2.18 calls
  ``faiss.OPQMatrix(d, M=…, d2=…)`` with keywords, which the bindings of faiss 1.13+ refuse). ``current_memory_available`` is
  ``--peer-build-memory`` (default 8G: autofaiss refuses a build budget under 1.1× the index
  budget, and its default of 32G is more than this machine has).

Build seconds are the child's wall time (interpreter start and imports included: what a user
waits; the build call alone is given beside it); peak RSS is each child's own ``VmHWM``, beside the
peak of a process that only imports the same modules. Index bytes: the faiss index files (what
search holds in RAM or, on disk, in the page cache); gemseg's folder also keeps the float32
descriptors (memory-mapped, for exact re-ranking) and the paths (SQLite), given as "folder".

Search is measured in this process for every index alike (faiss 1.15 reads autofaiss's files;
same threads, same 1,000 queries in one batch; 5 interleaved rounds over every setting, the best
round of each): recall@10 against exact search
(``retrieval.search.tuning.knn_recall``) and queries/s, first with each index's own search
settings (gemseg: the ``efSearch`` / ``nprobe`` its build tuned for ``--target-recall``, default
0.98, on held-out rows, and its re-ranking setting; autofaiss: the parameters it tuned for
``max_index_query_time_ms=10``), then at **matched recall**: on each side the cheapest
``efSearch`` / ``nprobe`` (gemseg: with and without re-ranking, the faster kept) reaching each
target (``retrieval.search.tuning.smallest_reaching``).

Descriptors: ``clustered-N`` = N 128-d unit vectors, 10⁴ random unit centres plus Gaussian noise
of norm ≈ 0.6, normalised (the recipe of ``bench_scale.py``); queries are 1,000 fresh draws of the
same mixture (not in the database). ``demo`` = the default model's descriptors of the demo
collection's photos (``retrieval.demo``'s collection: 8 objects × 6 views + 12 distractors), its
queries the query views.

**Extraction** (``--only extract``): images/s of the default model on the demo photos: gemseg's
``extract_descriptors`` vs a plain torch loop (``bench_extract.plain_loop``: open → resize →
forward → GeM, batch 1) vs onnxruntime when the checkout has the ONNX export
(``OnnxDescriptorNet.extract`` of ``retrieval/search/onnx_extract.py``, the model exported once;
the row says "not measured" otherwise); the same paths, interleaved rounds, medians.

    python benchmarks/bench_peers.py --only index --n 100000
    nice python benchmarks/bench_peers.py --only index --n 1000000
    python benchmarks/bench_peers.py --only demo,extract
    python benchmarks/bench_peers.py                 # make bench: 10⁵, demo and extraction
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_scale import _PEAK  # noqa: E402  (the VmHWM wrapper: one child, its own peak)
from benchmarks.common import clustered, markdown_table, write_shards  # noqa: E402
from retrieval.search.shards import ShardDir  # noqa: E402
from retrieval.search.tuning import knn_recall, smallest_reaching  # noqa: E402

D = 128
K = 10
PEER_VENV = ROOT / "benchmarks" / ".peers-venv"
PEER_PACKAGES = ["autofaiss", "faiss-cpu<1.13", "pyarrow<20"]
EF_LADDER = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
TARGETS = [0.90, 0.95, 0.99]


# ---------------------------------------------------------------- the peer's environment

def peer_python(venv: Path = PEER_VENV) -> Path:
    """The peer venv's interpreter, creating the venv (``python -m venv`` + pip) on first use."""
    py = venv / "bin" / "python"
    if py.is_file() and subprocess.run([str(py), "-c", "import autofaiss"], capture_output=True).returncode == 0:
        return py
    print(f"creating {venv} for autofaiss (once): pip install {' '.join(PEER_PACKAGES)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return py


def peer_versions(py: Path) -> str:
    out = subprocess.run([str(py), "-c", "import autofaiss.version as v, faiss, numpy; "
                          "print(v.__version__, faiss.__version__, numpy.__version__)"],
                         capture_output=True, text=True).stdout.split()
    return f"autofaiss {out[0]}, faiss {out[1]}, numpy {out[2]}" if len(out) == 3 else "autofaiss ?"


# ---------------------------------------------------------------- children with their own peak RSS

def run_peak(python: Path, script_and_args: List[str], work: Path) -> Tuple[float, str, float]:
    """Run a Python script in a child; returns (wall seconds, stdout, the child's own peak RSS in GiB)."""
    out = work / f"peak_rss_{os.getpid()}_{time.monotonic_ns()}.txt"  # one per child: runs may overlap
    t0 = time.perf_counter()
    p = subprocess.run([str(python), "-c", _PEAK, str(out), *script_and_args], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"{script_and_args[0]} failed:\n{p.stderr[-3000:]}")
    kib = int(out.read_text())
    out.unlink()
    return wall, p.stdout, kib / 2 ** 20


def import_floor(python: Path, modules: str, work: Path) -> float:
    """Peak RSS (GiB) of a child that only imports ``modules``."""
    script = work / f"imports_only_{python.parent.parent.name}.py"
    script.write_text(f"import {modules}\n")
    return run_peak(python, [str(script)], work)[2]


# ---------------------------------------------------------------- descriptors

def write_inputs(work: Path, X: np.ndarray, shard_size: int = 100_000) -> Tuple[Path, Path]:
    """The same vectors as a folder of .npy (autofaiss) and as descriptor shards (gemseg); reused."""
    npy, desc = work / "npy", work / "desc"
    if not (npy / "emb.npy").is_file() or np.load(npy / "emb.npy", mmap_mode="r").shape != X.shape:
        npy.mkdir(parents=True, exist_ok=True)
        np.save(npy / "emb.tmp.npy", X)
        os.replace(npy / "emb.tmp.npy", npy / "emb.npy")
    if not (desc / "manifest.json").is_file() or ShardDir(desc).manifest().get("images") != X.shape[0]:
        write_shards(desc, (X[a:a + shard_size] for a in range(0, X.shape[0], shard_size)), X.shape[1], shard_size,
                     {"generated": True}, "bench-peers", lambda i: f"/gen/{i}.jpg")
    return npy, desc


def demo_descriptors(work: Path) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """The default model's (N, 1280) descriptors of the demo collection's database and (Q, 1280)
    of its query views, and the database paths; cached in ``work``."""
    cache = work / "demo_descriptors.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return z["db"], z["q"], [str(p) for p in z["paths"]]
    from retrieval.model.network import ModelConfig, build_network
    from retrieval.search.extract import extract_descriptors

    coll = demo_collection(work)
    net = build_network(ModelConfig()).eval()
    db = extract_descriptors(net, coll.db_paths, progress=sys.stderr.isatty())
    q = extract_descriptors(net, coll.query_paths, progress=sys.stderr.isatty())
    np.savez(cache, db=db.descriptors, q=q.descriptors, paths=np.array([str(p) for p in db.paths]))
    return db.descriptors, q.descriptors, [str(p) for p in db.paths]


def demo_collection(work: Path) -> Any:
    """The demo's collection (``retrieval.demo.demo``'s arguments), generated once under ``work``."""
    from retrieval.toy.collection import make_retrieval_collection

    source = "photos" if importlib.util.find_spec("skimage") is not None else "synthetic"
    return make_retrieval_collection(work / "demo_collection", n_objects=8, views=6, distractors=12,
                                     image_size=256, seed=0, source=source)


# ---------------------------------------------------------------- builds

def folder_bytes(folder: Path, sub: Optional[str] = None) -> int:
    base = folder / sub if sub else folder
    return sum(p.stat().st_size for p in base.rglob("*") if p.is_file()) if base.exists() else 0


def reused(work: Path, name: str, reuse: bool, build: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """``build()``'s row, saved as ``work/name.build.json``; with ``reuse``, the saved row of an
    earlier run (its index still there) instead of a new build (to re-measure search only)."""
    f = work / f"{name}.build.json"
    if reuse and f.is_file():
        row = json.loads(f.read_text())
        if Path(row["path"]).exists():
            print(f"  reusing the build of {row['label']} ({f})", file=sys.stderr)
            return row
    row = build()
    f.write_text(json.dumps(row))
    return row


def build_gemseg(work: Path, desc: Path, budget: str, on_disk: bool) -> Dict[str, Any]:
    ix = work / ("gemseg_disk" if on_disk else "gemseg_ram")
    if ix.exists():
        import shutil

        shutil.rmtree(ix)
    wall, out, rss = run_peak(Path(sys.executable), ["tools/index.py", "--descriptors", str(desc), "--out", str(ix),
                                                     "--json", "--memory-budget", budget]
                              + (["--on-disk"] if on_disk else []), work)
    rep = json.loads(out)
    return {"side": "gemseg", "label": f"gemseg auto{' --on-disk' if on_disk else ''}", "on_disk": on_disk,
            "factory": rep["factory"], "wall_s": wall, "build_s": rep["seconds"], "peak_gib": rss,
            "tuning": rep.get("tuning"),
            "index_bytes": folder_bytes(ix, "segments"), "folder_bytes": folder_bytes(ix), "path": str(ix)}


def build_autofaiss(work: Path, npy: Path, budget: str, build_memory: str, mmap: bool, py: Path) -> Dict[str, Any]:
    name = "autofaiss_mmap" if mmap else "autofaiss"
    path, infos = work / f"{name}.index", work / f"{name}_infos.json"
    args = [str(ROOT / "benchmarks" / "peers_autofaiss.py"), str(npy), str(path), str(infos), budget, build_memory]
    wall, out, rss = run_peak(py, args + (["mmap"] if mmap else []), work)
    rep = json.loads(out.strip().splitlines()[-1])
    return {"side": "autofaiss", "label": f"autofaiss{' memory-mappable' if mmap else ''}", "on_disk": mmap,
            "factory": rep["infos"]["index_key"], "param": rep["infos"].get("index_param", ""),
            "wall_s": wall, "build_s": rep["seconds"], "peak_gib": rss, "index_bytes": path.stat().st_size,
            "folder_bytes": path.stat().st_size, "path": str(path)}


# ---------------------------------------------------------------- search

class Searcher:
    """One index, searched with one knob (``efSearch`` or ``nprobe``; none for exact) and, for
    gemseg, re-ranking on or off; ``search(Q, value, rerank)`` → (Q, K) ids."""

    def __init__(self, row: Dict[str, Any]) -> None:
        import faiss

        from retrieval.search.factory import ivf_of
        from retrieval.search.index import ImageIndex

        self.row, self.faiss = row, faiss
        if row["side"] == "gemseg":
            self.index = ImageIndex.load(row["path"])
            fac = self.index.factory
            self.knob = "ef_search" if "HNSW" in fac and "IVF" not in fac else ("nprobe" if "IVF" in fac else None)
            self.nlist = int(ivf_of(self.index.segments[0].index).nlist) if self.knob == "nprobe" else 0
            stored = self.index.config.rerank
            self.reranks = stored if stored is not None else True  # what rerank=None does
            # the stored setting (None), and the other re-ranking mode
            self.rerank_modes: List[Optional[bool]] = [None, not self.reranks] if self.knob else [None]
        else:
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if row["on_disk"] else 0
            self.index = faiss.read_index(row["path"], flags)
            if row.get("param"):
                faiss.ParameterSpace().set_index_parameters(self.index, row["param"])
            ivf = ivf_of(self.index)
            self.knob = "nprobe" if ivf is not None else ("ef_search" if "HNSW" in row["factory"] else None)
            self.nlist = int(ivf.nlist) if ivf is not None else 0
            self.rerank_modes = [None]

    def ladder(self) -> List[int]:
        if self.knob == "ef_search":
            return EF_LADDER
        if self.knob == "nprobe":
            out, v = [], 1
            while v < self.nlist:
                out.append(v)
                v *= 2
            return out + [self.nlist]
        return [0]

    def search(self, Q: np.ndarray, value: Optional[int] = None, rerank: Optional[bool] = None) -> np.ndarray:
        if self.row["side"] == "gemseg":
            kw = {} if value is None or not self.knob else {self.knob: value}
            return self.index.search(Q, K, rerank=rerank, **kw)[1]
        if value is not None and self.knob:
            name = "efSearch" if self.knob == "ef_search" else "nprobe"
            self.faiss.ParameterSpace().set_index_parameters(self.index, f"{name}={value}")
        elif self.row.get("param"):
            self.faiss.ParameterSpace().set_index_parameters(self.index, self.row["param"])
        return self.index.search(Q, K)[1]

    def setting(self, value: Optional[int], rerank: Optional[bool]) -> str:
        gemseg = self.row["side"] == "gemseg"
        reranked = gemseg and bool(self.knob) and (self.reranks if rerank is None else rerank)
        if value is None:
            if not gemseg:
                return self.row.get("param") or "-"
            t = self.row.get("tuning")
            if not t:
                return "defaults" + (", re-rank 100" if reranked else "")
            name = "efSearch" if t["knob"] == "ef_search" else "nprobe"
            return f"{name} {t['value']} (tuned for {t['target']:g})" + (", re-rank 100" if reranked else "")
        s = f"{'efSearch' if self.knob == 'ef_search' else 'nprobe'} {value}" if self.knob else "exact"
        return s + (", re-rank 100" if reranked else "")


def measure(rows: List[Dict[str, Any]], Q: np.ndarray, truth: np.ndarray, targets: List[float],
            rounds: int = 5) -> None:
    """Fill each row's own recall and queries/s and, per target, the fastest setting reaching it.

    Recall first (deterministic): each index's own settings, then per target and re-ranking mode
    the cheapest knob value reaching it. Then speed, in ``rounds`` interleaved rounds over every
    setting of every index (one search of all of ``Q`` at once each), keeping each setting's best
    round, so that a passing load on this shared machine hits every side alike and is not counted.
    """
    searchers = [Searcher(r) for r in rows]
    plans: List[Dict[float, List[Tuple[Optional[int], Optional[bool]]]]] = []
    recalls: List[Dict[Tuple[Optional[int], Optional[bool]], float]] = []
    for row, s in zip(rows, searchers):
        cache: Dict[Tuple[Optional[int], Optional[bool]], float] = {(None, None): knn_recall(s.search(Q), truth, K)}
        plan: Dict[float, List[Tuple[Optional[int], Optional[bool]]]] = {}
        for t in targets:
            plan[t] = []
            for mode in s.rerank_modes:
                def recall_of(v: int, mode: Optional[bool] = mode) -> float:
                    key = (v if s.knob else None, mode) if s.knob else (None, None)
                    if key not in cache:
                        cache[key] = knn_recall(s.search(Q, key[0], mode), truth, K)
                    return cache[key]
                v, _ = smallest_reaching(s.ladder(), recall_of, t)
                if v is not None:
                    plan[t].append((v, mode) if s.knob else (None, None))
        plans.append(plan)
        recalls.append(cache)
    settings = [sorted({(None, None)} | {x for xs in plan.values() for x in xs}, key=str) for plan in plans]
    best: List[Dict[Tuple[Optional[int], Optional[bool]], float]] = [dict() for _ in rows]
    for r in range(rounds):
        for i, s in enumerate(searchers):
            for v, mode in settings[i]:
                if r == 0:
                    s.search(Q, v, mode)  # warm-up: pages in, caches filled
                t0 = time.perf_counter()
                s.search(Q, v, mode)
                best[i][(v, mode)] = min(best[i].get((v, mode), float("inf")), time.perf_counter() - t0)
        print(f"  timing round {r + 1}/{rounds} (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    for i, (row, s) in enumerate(zip(rows, searchers)):
        speed = {k: Q.shape[0] / t for k, t in best[i].items()}
        row["recall"], row["qps"], row["setting"] = recalls[i][(None, None)], speed[(None, None)], s.setting(None, None)
        row["matched"] = {}
        for t, options in plans[i].items():
            fastest = max(options, key=lambda o: speed[o], default=None)
            row["matched"][t] = None if fastest is None else \
                (speed[fastest], recalls[i][fastest], s.setting(*fastest) if s.knob else "exact")
        print(f"  {row['label']}: {row['factory']}, R@10 {row['recall']:.3f} at {row['qps']:.0f} q/s; matched: "
              + ", ".join(f"{t}: {b[0]:.0f} q/s ({b[2]})" if b else f"{t}: not reached"
                          for t, b in row["matched"].items()), file=sys.stderr)
    del searchers


def index_tables(name: str, rows: List[Dict[str, Any]], targets: List[float], gib: Callable[[int], str]) -> str:
    """The markdown of one dataset: builds and own settings, then matched recall (ratios first)."""
    def peer_of(row: Dict[str, Any]) -> Dict[str, Any]:
        same = [r for r in rows if r["side"] == "autofaiss" and r["on_disk"] == row["on_disk"]]
        return same[0] if same else next(r for r in rows if r["side"] == "autofaiss")

    head = ["index", "factory", "build × autofaiss", "peak RSS × autofaiss", "q/s × autofaiss", "recall@10",
            "queries/s", "search setting", "build s (wall; call)", "peak RSS GiB (imports only)",
            "index bytes (folder)"]
    body = []
    for r in rows:
        p = peer_of(r)
        body.append([r["label"], r["factory"], f"{r['wall_s'] / p['wall_s']:.2f}", f"{r['peak_gib'] / p['peak_gib']:.2f}",
                     f"{r['qps'] / p['qps']:.2f}", f"{r['recall']:.3f}", f"{r['qps']:.0f}", r["setting"],
                     f"{r['wall_s']:.1f}; {r['build_s']:.1f}", f"{r['peak_gib']:.2f} ({r['floor_gib']:.2f})",
                     f"{gib(r['index_bytes'])} ({gib(r['folder_bytes'])})"])
    out = [f"**{name}** — builds and each index's own search settings:", "", markdown_table(head, body), ""]
    head2 = ["target recall@10"] + [f"{r['label']}: q/s × autofaiss{'' if r['side'] == 'gemseg' else ''}"
                                    for r in rows if r["side"] == "gemseg"] + \
            [f"{r['label']}: q/s (recall, setting)" for r in rows]
    body2 = []
    for t in targets:
        line: List[Any] = [f"{t:.3f}"]
        for r in rows:
            if r["side"] != "gemseg":
                continue
            a, b = r["matched"].get(t), peer_of(r)["matched"].get(t)
            line.append(f"{a[0] / b[0]:.2f}" if a and b else "–")
        for r in rows:
            m = r["matched"].get(t)
            line.append(f"{m[0]:.0f} ({m[1]:.3f}, {m[2]})" if m else "not reached")
        body2.append(line)
    out += [f"**{name}** — at matched recall (the cheapest setting of each reaching the target):", "",
            markdown_table(head2, body2)]
    return "\n".join(out)


def bench_index(name: str, X: np.ndarray, Q: np.ndarray, work: Path, args: argparse.Namespace, py: Path) -> str:
    import faiss

    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    npy, desc = write_inputs(work, X, args.shard_size)
    exact = faiss.IndexFlatIP(X.shape[1])
    exact.add(X)
    truth = exact.search(Q, K)[1]
    del exact
    print(f"{name}: {X.shape[0]} × {X.shape[1]} written, exact top-{K} of {Q.shape[0]} queries in "
          f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
    rows = []
    sides = args.sides.split(",")
    builds = {
        "autofaiss": lambda: build_autofaiss(work, npy, args.memory_budget, args.peer_build_memory, False, py),
        "gemseg": lambda: build_gemseg(work, desc, args.memory_budget, False),
        "autofaiss-mmap": lambda: build_autofaiss(work, npy, args.memory_budget, args.peer_build_memory, True, py),
        "gemseg-disk": lambda: build_gemseg(work, desc, args.memory_budget, True),
    }
    for side in sides:
        if side not in builds:
            raise SystemExit(f"--sides: unknown build '{side}' (known: {', '.join(builds)})")
        rows.append(reused(work, side, args.reuse_builds, builds[side]))
    # what each build's child imports before it builds (gemseg's command and its job module)
    floors = {"gemseg": import_floor(Path(sys.executable), "retrieval.commands.index, retrieval.search.build", work),
              "autofaiss": import_floor(py, "autofaiss, faiss", work)}
    for r in rows:
        r["floor_gib"] = floors[r["side"]]
        print(f"  built {r['label']}: {r['factory']} in {r['wall_s']:.0f}s, peak {r['peak_gib']:.2f} GiB"
              + (f"; tuned: {r['tuning']['knob']} {r['tuning']['value']} → recall@10 {r['tuning']['recall']:.3f} "
                 f"on held-out rows in {r['tuning']['seconds']:.1f}s" if r.get("tuning") else ""), file=sys.stderr)
    own = sorted({round(r_, 3) for r_ in TARGETS})
    measure(rows, Q, truth, own, args.timing_rounds)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "a") as f:
            f.write(json.dumps({"dataset": name, "rows": rows, "setup": setup(py)}, default=str) + "\n")

    def gib(b: int) -> str:
        return f"{b / 2 ** 30:.2f} GiB" if b >= 2 ** 28 else f"{b / 2 ** 20:.1f} MiB"

    return index_tables(name, rows, own, gib)


def setup(py: Path) -> str:
    import faiss

    return (f"{os.cpu_count()} CPUs, {faiss.omp_get_max_threads()} faiss threads, load average "
            f"{os.getloadavg()[0]:.1f} (1 min) at the end; gemseg's faiss {faiss.__version__}; peer: {peer_versions(py)}")


# ---------------------------------------------------------------- extraction

def onnx_extractor(net: Any, work: Path) -> Optional[Callable[[List[str]], float]]:
    """onnxruntime extraction of ``net`` (exported once to ``work/default.onnx``) as a function of
    the paths returning its seconds, when this checkout has the ONNX export (the interop issue:
    ``retrieval.model.onnx_export.export_onnx``, ``retrieval.search.onnx_extract.OnnxDescriptorNet``);
    else None."""
    if importlib.util.find_spec("retrieval.search.onnx_extract") is None or \
            importlib.util.find_spec("onnxruntime") is None:
        return None
    from retrieval.model.onnx_export import export_onnx
    from retrieval.search.onnx_extract import OnnxDescriptorNet

    path = work / "default.onnx"
    if not path.is_file():
        export_onnx(net, path)
    model = OnnxDescriptorNet(path)
    return lambda paths: model.extract(paths).seconds


def bench_extraction(work: Path, rounds: int, batch: int, n_photos: int = 0) -> str:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_extract import plain_loop

    from retrieval.model.network import ModelConfig, build_network
    from retrieval.search.extract import extract_descriptors, resolve_device

    coll = demo_collection(work)
    paths = [str(p) for p in coll.db_paths + coll.query_paths][:n_photos or None]
    dev = resolve_device(None)
    net = build_network(ModelConfig()).to(dev).eval()
    onnx = onnx_extractor(net, work)
    plain_loop(net, paths[:2], dev)  # warm-up of each
    if onnx is not None:
        onnx(paths[:2])
    extract_descriptors(net, paths[:2], batch_size=batch, workers=0, device=dev, progress=False)
    times: Dict[str, List[float]] = {"plain": [], "gemseg": [], "onnxruntime": []}
    for r in range(rounds):
        times["plain"].append(plain_loop(net, paths, dev)[0])
        times["gemseg"].append(extract_descriptors(net, paths, batch_size=batch, device=dev, progress=False).seconds)
        if onnx is not None:
            times["onnxruntime"].append(onnx(paths))
        print(f"  round {r + 1}/{rounds}: " + "  ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items() if v),
              file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    rows = [["gemseg extract_descriptors (batch %d)" % batch, f"{med['plain'] / med['gemseg']:.2f}",
             f"{len(paths) / med['gemseg']:.2f}"],
            ["plain torch loop (batch 1)", "1.00", f"{len(paths) / med['plain']:.2f}"],
            ["onnxruntime (batch 1, decoding in this process)", f"{med['plain'] / med['onnxruntime']:.2f}" if "onnxruntime" in med else "not measured",
             f"{len(paths) / med['onnxruntime']:.2f}" if "onnxruntime" in med else
             "not measured (no ONNX export in this checkout)"]]
    return (f"Default model ({net.config.backbone}, {net.config.image_size} px, scales {net.config.scales}) on "
            f"{len(paths)} demo photos; {dev}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f}; medians of {rounds} interleaved rounds\n\n"
            + markdown_table(["extraction", "× plain loop", "images/s"], rows))


# ---------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="index,demo,extract", help="comma-separated: index, demo, extract")
    ap.add_argument("--n", type=int, default=100_000, help="clustered descriptors for --only index (default 1e5)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--memory-budget", default="4G", help="both sides' index budget (default 4G)")
    ap.add_argument("--peer-build-memory", default="8G", help="autofaiss's current_memory_available (default 8G)")
    ap.add_argument("--sides", default="autofaiss,gemseg,autofaiss-mmap,gemseg-disk",
                    help="builds to run (comma-separated; default all four)")
    ap.add_argument("--reuse-builds", action="store_true",
                    help="reuse the indexes (and build rows) of an earlier run in --work: re-measure search only")
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--timing-rounds", type=int, default=5, help="interleaved rounds timing every search setting")
    ap.add_argument("--photos", type=int, default=0, help="demo photos the extraction uses (default 0: all)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the extraction")
    ap.add_argument("--batch", type=int, default=8, help="gemseg's extraction batch")
    ap.add_argument("--work", default=str(ROOT / "bench_out" / "peers"))
    ap.add_argument("--json", help="append each dataset's rows to this JSON-lines file")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    py = peer_python() if ("index" in only or "demo" in only) else Path(sys.executable)
    if "index" in only:
        X = clustered(args.n, seed=1, dim=D)
        Q = clustered(args.queries, seed=2, dim=D)
        text = bench_index(f"clustered-{args.n}", X, Q, work / f"clustered_{args.n}", args, py)
        print(f"\n{text}\n\n{setup(py)}\n", flush=True)
    if "demo" in only:
        db, q, _ = demo_descriptors(work)
        text = bench_index(f"demo ({db.shape[0]} × {db.shape[1]}, default model)", np.ascontiguousarray(db),
                           np.ascontiguousarray(q), work / "demo_index", args, py)
        print(f"\n{text}\n\n{setup(py)}\n", flush=True)
    if "extract" in only:
        print("\n" + bench_extraction(work, args.rounds, args.batch, args.photos) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
