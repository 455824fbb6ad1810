#!/usr/bin/env python
"""Model selection: is best.pt ever worse than the starting network on held-out images, and how
much of a real gain does it keep?

For each seed, one fine-tuning run (EfficientNet-Lite0, ImageNet weights, single scale,
``train.whitening: auto``, validation sized by :func:`retrieval.training.selection.split_for_selection`)
on each of two sources, then every model of interest scored on **held-out** images by the mAP of
:func:`retrieval.training.validation.mean_ap` (every image a query):

* ``photos`` — the issue's case: 16 classes (the two halves of 8 scikit-image colour photos) × 4
  views (random 60–90 % crops, ±10°, brightness/contrast ±25 %) at 96 px; held out: 3 other views
  of the same 16 classes. Seed ``s`` draws other views and another split and training order.
* ``synthetic`` — the generated toy objects (:class:`~retrieval.training.toy_data.ToyData`: 32
  objects × 6 views, 96 px, clutter 0.3, seed ``100 + s``); held out: 16 *other* objects × 6 views
  (seed ``1000 + s``).

Every candidate of the run (each step × none / PCA-w / Lw, the step's network kept by copying
``last.pt`` when its log line arrives, with the very whitening the run learned) is scored on the
held-out images, and its validation per-query APs (the run's own, recorded from
:func:`~retrieval.training.selection.score_step`) are stored with it in a JSON cache
(``WORK/cache.json``, one entry per source × seed × epochs; a run found there is not trained
again). The picks are then made from the cache, so rules can be compared on the same runs
(``--multiplicity``): the start (no whitening); ``best.pt`` (:class:`ModelSelection` with that
multiplicity, on the run's validation APs: what the run itself decides); the **old rule** (the
highest validation mAP among all (step, whitening), ties to the earlier); and **forced Lw** (the
step with the highest validation mAP with Lw). Where the run's own ``best.pt`` differs from the
first multiplicity's pick the line says so.

Reported: how often each pick is below the start by more than 0.005 mAP, and the share of forced
Lw's synthetic gain that best.pt keeps (``Σ(best − start) / Σ(forced Lw − start)`` over seeds).

  python benchmarks/bench_selection.py --seeds 10 --epochs 3     # both sources, max-T and Bonferroni
  python benchmarks/bench_selection.py --seeds 3 --only photos
  python benchmarks/bench_selection.py --no-train               # the tables from the cache alone
  python benchmarks/bench_selection.py --sizing floor --cache bench_out/selection/cache_floor.json
                                                                 # validation at the floor only
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from retrieval.model.checkpoint import load_checkpoint  # noqa: E402
from retrieval.model.network import ModelConfig, build_network  # noqa: E402
from retrieval.model.whitening import Whitening  # noqa: E402
from retrieval.toy.photo_views import photo_views  # noqa: E402
from retrieval.training import engine, selection  # noqa: E402
from retrieval.training.config import TrainConfig  # noqa: E402
from retrieval.training.pairs import pairs_from_folders  # noqa: E402
from retrieval.training.selection import KINDS, MULTIPLICITY, NAMES, ModelSelection, StepScore, score_step  # noqa: E402
from retrieval.training.supervised import load_training_pairs, train  # noqa: E402
from retrieval.training.toy_data import ToyData, prepare_toy_data  # noqa: E402
from retrieval.training.validation import describe_pairs, mean_ap  # noqa: E402

OLD_ORDER = ("none", "lw", "pca")  # the order the old rule met a step's whitenings in
WORSE = 0.005


def sources(work: Path, seed: int) -> Dict[str, Tuple[Path, Path, Dict[str, Any]]]:
    """``source → (training folder, held-out folder, TrainConfig overrides)``."""
    pw = work / f"photos_s{seed}"
    photos = (photo_views(pw / "train", range(4), 96, seed), photo_views(pw / "test", range(4, 7), 96, seed),
              dict(qsize=20, nnum=3))
    sw = work / f"synthetic_s{seed}"
    tr = prepare_toy_data(ToyData(root=str(sw / "train"), n_objects=32, views=6, image_size=96, clutter=0.3,
                                  seed=100 + seed), log=lambda s: None)
    te = prepare_toy_data(ToyData(root=str(sw / "test"), n_objects=16, views=6, image_size=96, clutter=0.3,
                                  seed=1000 + seed), log=lambda s: None)
    return {"photos": photos, "synthetic": (tr, te, dict(qsize=40, nnum=5))}


def one_run(train_dir: Path, test_dir: Path, run_dir: Path, seed: int, epochs: int, extra: Dict[str, Any],
            sizing: str = "library") -> Dict:
    """Train once; return the cache entry: every candidate's validation per-query APs and
    held-out mAP (module docstring), the validation classes of the queries, and what the run's own
    ``best.pt`` held and scored. ``sizing="floor"``: validation holds out only the classes the
    call needs (:func:`~retrieval.training.selection.classes_needed`, the earlier sizing) instead
    of :func:`~retrieval.training.selection.classes_wanted`."""
    size = 96
    model = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=size, scales=[1.0])
    cfg = TrainConfig(data=str(train_dir), val_fraction=0.2, val_split="classes", lr=1e-5, epochs=epochs,
                      poolsize=2000, batch=5, workers=0, mine_batch=32, seed=seed, **extra)
    lines: List[str] = []
    wanted = selection.classes_wanted
    if sizing == "floor":
        selection.classes_wanted = lambda n_paired, need: need
    try:
        tr, va, _ = load_training_pairs(cfg, log=lines.append)
    finally:
        selection.classes_wanted = wanted
    test = pairs_from_folders(test_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    net = build_network(model)
    start = copy.deepcopy(net)
    snaps: Dict[int, Path] = {}
    scores: Dict[int, StepScore] = {}

    def log(line: str) -> None:  # keep each epoch's network: last.pt is written just before its line
        lines.append(line)
        if line.startswith("epoch ") and "/" in line:
            step = int(line.split()[1].split("/")[0])
            if step >= 1:
                snaps[step] = run_dir / f"epoch{step}.pt"
                shutil.copyfile(run_dir / "last.pt", snaps[step])

    def recording(*a: Any, **k: Any) -> StepScore:  # the run's own scores: APs and whitenings
        sc = score_step(*a, **k)
        scores[sc.step] = sc
        return sc

    t0 = time.perf_counter()
    engine.score_step = recording
    try:
        res = train(net, tr, cfg, run_dir, val=va, progress=False, log=log)
    finally:
        engine.score_step = score_step
    seconds = time.perf_counter() - t0
    cands = []
    for step in sorted(scores):
        sc = scores[step]
        n = start if step == 0 else load_checkpoint(snaps[step])
        T, t = describe_pairs(n, test, image_size=size, batch_size=32, workers=0)
        for kind in KINDS:
            if kind not in sc.aps:
                continue
            w = sc.whitenings.get(kind)
            ho = mean_ap(T if kind == "none" else w.apply(T), t)
            cands.append({"step": step, "kind": kind, "val_map": float(sc.maps[kind]),
                          "aps": [float(x) for x in sc.aps[kind]], "held_out": float(ho)})
    best = load_checkpoint(res.best_path)  # best.pt itself, as tools/index.py would load it
    T, t = describe_pairs(best, test, image_size=size, batch_size=32, workers=0)
    return {"val_classes": int(va.n_classes), "val_queries": int(len(va.ground_truth()[0])),
            "train_classes": int(tr.n_classes), "seconds": seconds, "epochs": epochs, "seed": seed,
            "groups": [int(g) for g in scores[0].groups], "candidates": cands,
            "run_best": {"step": int(res.best_step), "kind": res.whitening, "why": res.selection.get("why", ""),
                         "held_out_best_pt": float(mean_ap(T, t))}}


def decide(entry: Dict[str, Any], multiplicity: str) -> Tuple[Tuple[int, str], str]:
    """The rule of :mod:`retrieval.training.selection` (``multiplicity``) applied to a cached
    run's validation APs: the kept ``(step, kind)`` and the sentence that says why."""
    sel = ModelSelection("auto", log=lambda s: None, steps=entry["epochs"], seed=entry["seed"],
                         multiplicity=multiplicity)
    groups = np.asarray(entry["groups"])
    eye = Whitening(np.zeros(2, np.float32), np.eye(2, dtype=np.float32), "lw")
    for step in sorted({c["step"] for c in entry["candidates"]}):
        cs = {c["kind"]: c for c in entry["candidates"] if c["step"] == step}
        sel.consider(StepScore(step, {k: cs[k]["val_map"] if k in cs else float("nan") for k in KINDS},
                               {k: eye for k in cs if k != "none"},
                               {k: np.asarray(c["aps"]) for k, c in cs.items()}, groups))
    b = sel.decide()
    return (b.step, b.kind), sel.why()


def picks(entry: Dict[str, Any], multiplicity: str) -> Dict[str, Any]:
    """Held-out mAP of the start, best.pt (the rule), the old rule's pick and forced Lw's."""
    held = {(c["step"], c["kind"]): c["held_out"] for c in entry["candidates"]}
    old, old_map = (0, "none"), -1.0
    by_step = {}
    for c in entry["candidates"]:
        by_step.setdefault(c["step"], {})[c["kind"]] = c["val_map"]
    for step in sorted(by_step):
        for k in OLD_ORDER:
            v = by_step[step].get(k, float("nan"))
            if v == v and v > old_map:
                old, old_map = (step, k), v
    lw = [(m["lw"], -s) for s, m in by_step.items() if m.get("lw", float("nan")) == m.get("lw", float("nan"))]
    forced = (-max(lw)[1], "lw") if lw else (0, "none")
    best, why = decide(entry, multiplicity)
    out: Dict[str, Any] = {"why": why}
    for name, c in {"start": (0, "none"), "best": best, "old": old, "forced_lw": forced}.items():
        out[name] = {"step": c[0], "kind": c[1], "held_out": held[c]}
    return out


def summarise(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    start = np.array([r["start"]["held_out"] for r in rows])
    s: Dict[str, Any] = {"seeds": len(rows)}
    for name in ("best", "old", "forced_lw"):
        m = np.array([r[name]["held_out"] for r in rows])
        s[name] = {"worse": int(np.sum(m < start - WORSE)), "mean_gain": float(np.mean(m - start)),
                   "worse_by": [float(x) for x in (m - start)[m < start - WORSE]]}
    gain_f = float(np.sum([r["forced_lw"]["held_out"] - r["start"]["held_out"] for r in rows]))
    gain_b = float(np.sum([r["best"]["held_out"] - r["start"]["held_out"] for r in rows]))
    s["kept_share_of_forced_lw_gain"] = gain_b / gain_f if gain_f > 0 else float("nan")
    return s


def _name(p: Dict[str, Any]) -> str:
    return f"{p['step']} + {NAMES[p['kind']]}"


def tables(entries: Dict[str, List[Dict[str, Any]]], multiplicity: str) -> Tuple[str, str, Dict[str, Any]]:
    """The per-run table, the summary table and the summary (``--json``) under ``multiplicity``."""
    per, summ, doc = [], [], {}
    for src, es in entries.items():
        rows = [dict(picks(e, multiplicity), seed=e["seed"], entry=e) for e in es]
        for r in rows:
            e = r["entry"]
            per.append([src, r["seed"], f"{e['val_classes']} ({e['val_queries']})",
                        f"{100 * r['start']['held_out']:.1f}",
                        f"{100 * r['best']['held_out']:.1f} ({_name(r['best'])})",
                        f"{100 * r['old']['held_out']:.1f} ({_name(r['old'])})",
                        f"{100 * r['forced_lw']['held_out']:.1f} ({r['forced_lw']['step']})"])
        if not rows:
            continue
        s = summarise(rows)
        doc[src] = s

        def worse(k: str, s: Dict[str, Any] = s) -> str:
            w = s[k]["worse_by"]
            return f"{s[k]['worse']} / {s['seeds']}" + (f" ({', '.join(f'{100 * x:+.1f}' for x in w)})" if w else "")

        summ.append([src, s["seeds"], worse("best"), worse("old"), worse("forced_lw"),
                     " / ".join(f"{100 * s[k]['mean_gain']:+.1f}" for k in ("best", "old", "forced_lw")),
                     f"{100 * s['kept_share_of_forced_lw_gain']:.0f} %"])
    t1 = markdown_table(["source", "seed", "val classes (queries)", "start", "best.pt (kept)", "old rule (kept)",
                         "forced Lw (epoch)"], per)
    t2 = markdown_table(["source", "runs", "best.pt worse", "old rule worse", "forced Lw worse",
                         "mean held-out gain: best.pt / old rule / forced Lw", "best.pt's share of forced Lw's gain"],
                        summ)
    return t1, t2, doc


def _write(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float))
    tmp.replace(path)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=["photos", "synthetic"], choices=["photos", "synthetic"])
    ap.add_argument("--work", default="bench_out/selection")
    ap.add_argument("--cache", help="the runs' JSON cache (default WORK/cache.json): a run found there is not "
                                    "trained again")
    ap.add_argument("--multiplicity", nargs="*", default=list(MULTIPLICITY),
                    choices=list(MULTIPLICITY), help="the rules to tabulate (the first is the library's)")
    ap.add_argument("--no-train", action="store_true", help="tabulate the cached runs only")
    ap.add_argument("--sizing", default="library", choices=["library", "floor"],
                    help="validation classes: the library's (classes_wanted) or only the floor (classes_needed)")
    ap.add_argument("--json", help="write the per-seed rows and the summary here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache_path = Path(args.cache) if args.cache else work / "cache.json"
    cache: Dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    entries: Dict[str, List[Dict[str, Any]]] = {k: [] for k in args.only}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for src in args.only:
            key = f"{src}_s{seed}_e{args.epochs}" + ("" if args.sizing == "library" else f"_{args.sizing}")
            if key not in cache:
                if args.no_train:
                    continue
                tr, te, extra = sources(work, seed)[src]
                cache[key] = one_run(tr, te, work / f"run_{src}_s{seed}", seed, args.epochs, extra, args.sizing)
                _write(cache_path, cache)
                shutil.rmtree(work / f"run_{src}_s{seed}", ignore_errors=True)
            e = cache[key]
            entries[src].append(e)
            p = picks(e, args.multiplicity[0])
            rb = e["run_best"]
            same = (rb["step"], rb["kind"]) == (p["best"]["step"], p["best"]["kind"])
            print(f"{src} seed {seed}: start {p['start']['held_out']:.4f}  best.pt {p['best']['held_out']:.4f} "
                  f"({_name(p['best'])})  old rule {p['old']['held_out']:.4f} ({_name(p['old'])})  forced Lw "
                  f"{p['forced_lw']['held_out']:.4f} ({p['forced_lw']['step']})  val {e['val_classes']} classes  "
                  f"{e['seconds']:.0f}s" + ("" if same else f"  [the run's own best.pt: {rb['step']} + {rb['kind']}]"),
                  flush=True)
    out = {}
    for mult in args.multiplicity:
        t1, t2, doc = tables(entries, mult)
        out[mult] = doc
        print(f"\n## {mult}\n\n{t1}\n\n{t2}")
    if args.json:
        _write(Path(args.json), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
