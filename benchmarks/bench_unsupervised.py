"""Benchmark: training with no labels vs label-supervised fine-tuning vs off-the-shelf, same data.

Runs ``tools/train_gem.py`` twice on the toy collection of ``configs/train_toy.yaml`` (48 objects ×
8 views, 128 px, EfficientNet-Lite0 ImageNet, 20 % of the objects held out for validation):

* ``configs/train_toy.yaml`` — label-supervised (class folders), 6 epochs of 100 tuples;
* ``configs/train_unsupervised.yaml`` — the same images with no labels: 3 cluster/train periods of
  2 epochs (6 epochs in all), the class folders used only to hold out the same validation objects
  and to report the NMI of the clusters.

and prints validation mAP (held-out objects; off-the-shelf = before training) and, for the
unsupervised run, the clusters, NMI and mAP per period. ``--reuse`` reads finished run folders.

``--photos`` adds the same pair of runs on real-photo objects (the 9 scikit-image objects × 8 views,
128 px; 3 periods of 2 epochs into 18 clusters vs 6 supervised epochs), validated *transductively*: retrieval among the training images
themselves, their classes used only to score (the use case "make my own unlabeled pile
searchable"); the supervised run is then trained on those very labels, an upper bound.

    .venv/bin/python benchmarks/bench_unsupervised.py --out bench_out/unsup [--photos]
    .venv/bin/python benchmarks/bench_unsupervised.py --out bench_out/unsup_frozen --photos-only --lr 1e-4 --freeze-stages 12

``--lr`` / ``--freeze-stages`` override ``train.lr`` / ``train.freeze_stages`` in every run (copies of
the configs are written under ``--out``).
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from retrieval.toy.collection import export_class_folders, make_retrieval_collection  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> List[Dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _wmap(best: Path) -> Dict[str, float]:
    import torch

    try:
        return dict(torch.load(best, map_location="cpu", weights_only=True)["extra"].get("whitening_map") or {})
    except Exception:  # noqa: BLE001
        return {}


def _photo_configs(out: Path) -> Dict[str, Path]:
    """Generate the real-photo collection as class folders and
    write the two configs of the photo runs; returns {run name: config path}."""
    import yaml

    sys.path.insert(0, str(ROOT))
    root = out / "photo_data"
    classes = root / "classes"
    if not classes.is_dir():
        col = make_retrieval_collection(root / "collection", n_objects=9, views=8, distractors=0,
                                        image_size=128, seed=10, source="photos")
        export_class_folders(col, classes)
    sup = yaml.safe_load((ROOT / "configs" / "train_toy.yaml").read_text())
    uns = yaml.safe_load((ROOT / "configs" / "train_unsupervised.yaml").read_text())
    for cfg in (sup, uns):
        cfg["train"].pop("toy", None)
        cfg["train"]["data"] = str(classes)
        cfg["train"]["epochs"] = 6
    sup["train"]["val_data"] = str(classes)  # transductive: the labels it trains on, an upper bound
    uns["unsupervised"].update(validation="transductive", periods=3, epochs_per_period=2, final_clusters=18)
    paths = {}
    for name, cfg in (("photos_supervised", sup), ("photos_unsupervised", uns)):
        paths[name] = out / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(cfg, sort_keys=False))
    return paths


def _pct(v: Any) -> str:
    """A log.csv fraction as a percentage with two decimals; "—" for a missing or NaN value."""
    if v in (None, "", "nan") or float(v) != float(v):
        return "—"
    return f"{100 * float(v):.2f}"


def _override(runs: Dict[str, Path], out: Path, lr: Optional[float], freeze: Optional[int]) -> Dict[str, Path]:
    """Copies of the run configs with ``train.lr`` / ``train.freeze_stages`` replaced."""
    import yaml

    if lr is None and freeze is None:
        return runs
    new = {}
    for name, path in runs.items():
        cfg = yaml.safe_load(Path(path).read_text())
        if lr is not None:
            cfg["train"]["lr"] = lr
        if freeze is not None:
            cfg["train"]["freeze_stages"] = freeze
        new[name] = out / f"{name}.override.yaml"
        new[name].write_text(yaml.safe_dump(cfg, sort_keys=False))
    return new


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/unsup")
    ap.add_argument("--reuse", action="store_true", help="only read the run folders under --out")
    ap.add_argument("--photos", action="store_true", help="also the real-photo, transductive pair of runs")
    ap.add_argument("--photos-only", action="store_true", help="only the real-photo pair of runs")
    ap.add_argument("--lr", type=float, default=None, help="override train.lr in every run")
    ap.add_argument("--freeze-stages", type=int, default=None, help="override train.freeze_stages in every run")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs: Dict[str, Path] = {}
    if not args.photos_only:
        runs = {"supervised": ROOT / "configs" / "train_toy.yaml",
                "unsupervised": ROOT / "configs" / "train_unsupervised.yaml"}
    if args.photos or args.photos_only:
        runs.update(_photo_configs(out))
    runs = _override(runs, out, args.lr, args.freeze_stages)
    for name, cfg in runs.items():
        if args.reuse and (out / name / "log.csv").is_file():
            continue
        cmd = [sys.executable, str(ROOT / "tools" / "train_gem.py"), "--config", str(cfg), "--out",
               str(out / name), "--quiet"]
        print("running:", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=out, check=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))

    if not args.photos_only:
        _print_toy(out)
    if args.photos or args.photos_only:
        _print_photos(out)
    return 0


def _print_toy(out: Path) -> None:
    sup, uns = _rows(out / "supervised" / "log.csv"), _rows(out / "unsupervised" / "log.csv")
    ws, wu = _wmap(out / "supervised" / "best.pt"), _wmap(out / "unsupervised" / "best.pt")
    best_s = max(sup[1:], key=lambda r: float(r["val_map"]))
    best_u = max(uns[1:], key=lambda r: float(r["val_map"]))
    print("Validation mAP on the held-out toy objects (every image a query), EfficientNet-Lite0 @ 128 px:")
    print("| model | labels used | val mAP (best) | + PCA-w | + Lw |")
    print("|---|---|---:|---:|---:|")
    print(f"| off-the-shelf (ImageNet) | none | {_pct(sup[0]['val_map'])} | — | — |")
    print(f"| unsupervised (clusters), best period {best_u['period']} | none | {_pct(best_u['val_map'])} | "
          f"{_pct(wu.get('pca'))} | {_pct(wu.get('lw'))} |")
    print(f"| supervised, best epoch {best_s['epoch']} | class folders | {_pct(best_s['val_map'])} | "
          f"{_pct(ws.get('pca'))} | {_pct(ws.get('lw'))} |")
    print()
    print("Unsupervised periods (NMI against the training objects' true classes, evaluation only):")
    print("| period | clusters | NMI of the clusters | NMI@final | loss | val mAP |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in uns:
        loss = "—" if r["loss"] in ("", "nan") else f"{float(r['loss']):.4f}"
        print(f"| {r['period']} | {r['clusters']} | {_pct(r['nmi'])} | {_pct(r['nmi_final'])} | {loss} | {_pct(r['val_map'])} |")


def _print_photos(out: Path) -> None:
    ps, pu = _rows(out / "photos_supervised" / "log.csv"), _rows(out / "photos_unsupervised" / "log.csv")
    bs = max(ps[1:], key=lambda r: float(r["val_map"]))
    bu = max(pu[1:], key=lambda r: float(r["val_map"]))
    print()
    print("Real-photo objects, retrieval among the 72 training images (labels only to score):")
    print("| model | labels used | mAP |")
    print("|---|---|---:|")
    print(f"| off-the-shelf (ImageNet) | none | {_pct(pu[0]['val_map'])} |")
    print(f"| unsupervised, best period {bu['period']} | none | {_pct(bu['val_map'])} |")
    print(f"| supervised on these very labels, best epoch {bs['epoch']} (upper bound) | class folders | "
          f"{_pct(bs['val_map'])} |")
    print()
    print("| period | clusters | NMI of the clusters | NMI@final | val mAP |")
    print("|---:|---:|---:|---:|---:|")
    for r in pu:
        print(f"| {r['period']} | {r['clusters']} | {_pct(r['nmi'])} | {_pct(r['nmi_final'])} | {_pct(r['val_map'])} |")


if __name__ == "__main__":
    sys.exit(main())
