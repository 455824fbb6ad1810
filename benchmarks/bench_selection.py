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

Scored on the held-out images: the starting network with no whitening; ``best.pt`` (the rule of
:mod:`retrieval.training.selection`); the **old rule** (the highest validation mAP among all
(step, whitening), ties to the earlier, on the same run's validation scores); and **forced Lw**
(the step with the highest validation mAP with Lw). Each step's network is kept by copying
``last.pt`` when the step's log line arrives; the whitenings are learned again exactly as the run
learned them (same pair sample, same shrinkage), so every candidate is the run's own.

Reported: how often each pick is below the start by more than 0.005 mAP, and the share of forced
Lw's synthetic gain that best.pt keeps (``Σ(best − start) / Σ(forced Lw − start)`` over seeds).

  python benchmarks/bench_selection.py                        # 10 seeds, both sources, 2 epochs
  python benchmarks/bench_selection.py --seeds 3 --only photos
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
from retrieval.toy.photo_views import photo_views  # noqa: E402
from retrieval.training.config import TrainConfig  # noqa: E402
from retrieval.training.pairs import pairs_from_folders  # noqa: E402
from retrieval.training.selection import fit_whitenings  # noqa: E402
from retrieval.training.supervised import load_training_pairs, train  # noqa: E402
from retrieval.training.toy_data import ToyData, prepare_toy_data  # noqa: E402
from retrieval.training.validation import describe_pairs, mean_ap, sample_pairs  # noqa: E402

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


def one_run(train_dir: Path, test_dir: Path, run_dir: Path, seed: int, epochs: int, extra: Dict[str, Any]) -> Dict:
    """Train once; score the start, best.pt, the old rule's pick and forced Lw on held-out images."""
    size = 96
    model = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=size, scales=[1.0])
    cfg = TrainConfig(data=str(train_dir), val_fraction=0.2, val_split="classes", lr=1e-5, epochs=epochs,
                      poolsize=2000, batch=5, workers=0, mine_batch=32, seed=seed, **extra)
    lines: List[str] = []
    tr, va, _ = load_training_pairs(cfg, log=lines.append)
    test = pairs_from_folders(test_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    net = build_network(model)
    start = copy.deepcopy(net)
    snaps: Dict[int, Path] = {}

    def log(line: str) -> None:  # keep each epoch's network: last.pt is written just before its line
        lines.append(line)
        if line.startswith("epoch ") and "/" in line:
            step = int(line.split()[1].split("/")[0])
            if step >= 1:
                snaps[step] = run_dir / f"epoch{step}.pt"
                shutil.copyfile(run_dir / "last.pt", snaps[step])

    t0 = time.perf_counter()
    res = train(net, tr, cfg, run_dir, val=va, progress=False, log=log)
    seconds = time.perf_counter() - t0

    def network(step: int):
        return start if step == 0 else load_checkpoint(snaps[step])

    def held_out(step: int, kind: str) -> float:
        n = network(step)
        T, t = describe_pairs(n, test, image_size=size, batch_size=32, workers=0)
        if kind == "none":
            return mean_ap(T, t)
        sub = sample_pairs(tr, cfg.whiten_pairs, cfg.seed)
        X, sub = describe_pairs(n, sub, image_size=size, batch_size=32, workers=0)
        w = fit_whitenings(X, sub, [kind], "auto").get(kind)
        return mean_ap(w.apply(T), t) if w is not None else float("nan")

    cols = {"none": "val_map", "pca": "val_map_pca", "lw": "val_map_lw"}
    old, old_map = (0, "none"), -1.0
    for h in res.history:
        for k in OLD_ORDER:
            v = getattr(h, cols[k])
            if v == v and v > old_map:
                old, old_map = (h.step, k), v
    lw_steps = [(h.val_map_lw, -h.step) for h in res.history if h.val_map_lw == h.val_map_lw]
    forced = (-max(lw_steps)[1], "lw") if lw_steps else (0, "none")
    picks = {"start": (0, "none"), "best": (res.best_step, res.whitening), "old": old, "forced_lw": forced}
    cache: Dict[Tuple[int, str], float] = {}
    out: Dict[str, Any] = {"val_classes": int(va.n_classes), "val_queries": int(len(va.ground_truth()[0])),
                           "train_classes": int(tr.n_classes), "why": res.selection.get("why", ""),
                           "seconds": seconds}
    for name, c in picks.items():
        if c not in cache:
            cache[c] = held_out(*c)
        out[name] = {"step": c[0], "kind": c[1], "held_out": cache[c]}
    best = load_checkpoint(res.best_path)  # best.pt itself, as tools/index.py would load it
    T, t = describe_pairs(best, test, image_size=size, batch_size=32, workers=0)
    out["best"]["held_out_best_pt"] = mean_ap(T, t)
    return out


def summarise(src: str, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    start = np.array([r["start"]["held_out"] for r in rows])
    s: Dict[str, Any] = {"seeds": len(rows)}
    for name in ("best", "old", "forced_lw"):
        m = np.array([r[name]["held_out"] for r in rows])
        s[name] = {"worse": int(np.sum(m < start - WORSE)), "mean_gain": float(np.mean(m - start))}
    gain_f = float(np.sum([r["forced_lw"]["held_out"] - r["start"]["held_out"] for r in rows]))
    gain_b = float(np.sum([r["best"]["held_out"] - r["start"]["held_out"] for r in rows]))
    s["kept_share_of_forced_lw_gain"] = gain_b / gain_f if gain_f > 0 else float("nan")
    return s


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=["photos", "synthetic"], choices=["photos", "synthetic"])
    ap.add_argument("--work", default="bench_out/selection")
    ap.add_argument("--json", help="write the per-seed rows and the summary here (rewritten after every run)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows: Dict[str, List[Dict[str, Any]]] = {k: [] for k in args.only}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        srcs = sources(work, seed)
        for src in args.only:
            tr, te, extra = srcs[src]
            r = one_run(tr, te, work / f"run_{src}_s{seed}", seed, args.epochs, extra)
            r["seed"] = seed
            rows[src].append(r)
            print(f"{src} seed {seed}: start {r['start']['held_out']:.4f}  best.pt {r['best']['held_out']:.4f} "
                  f"({r['best']['step']}+{r['best']['kind']})  old rule {r['old']['held_out']:.4f} "
                  f"({r['old']['step']}+{r['old']['kind']})  forced Lw {r['forced_lw']['held_out']:.4f} "
                  f"({r['forced_lw']['step']})  val {r['val_classes']} classes  {r['seconds']:.0f}s", flush=True)
            if args.json:
                doc = {"rows": rows, "summary": {k: summarise(k, v) for k, v in rows.items() if v}}
                Path(args.json).write_text(json.dumps(doc, indent=1, default=float))
    table = []
    for src, rs in rows.items():
        s = summarise(src, rs)
        table.append([src, s["seeds"], f"{s['best']['worse']}/{s['seeds']}", f"{s['old']['worse']}/{s['seeds']}",
                      f"{s['forced_lw']['worse']}/{s['seeds']}", f"{100 * s['best']['mean_gain']:+.2f}",
                      f"{100 * s['old']['mean_gain']:+.2f}", f"{100 * s['forced_lw']['mean_gain']:+.2f}",
                      f"{100 * s['kept_share_of_forced_lw_gain']:.0f} %"])
    print(markdown_table(["source", "seeds", "best.pt worse", "old rule worse", "forced Lw worse",
                          "best.pt gain", "old rule gain", "forced Lw gain", "best.pt / forced Lw gain"], table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
