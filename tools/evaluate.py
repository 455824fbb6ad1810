#!/usr/bin/env python
"""Evaluate a descriptor model on a retrieval benchmark (revisited Oxford/Paris protocol).

Examples:
  python tools/evaluate.py --dataset roxford5k --data-root data
  python tools/evaluate.py --dataset toy --qe 2 --dba 2 --multiscale
  python tools/evaluate.py --dataset folder:photos/labeled --model runs/gem.pt --json

Prints mAP and mP@10 for the Easy / Medium / Hard setups (in percent), the layout papers use.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from retrieval.core.cli import EXIT_OK, main_wrapper, print_json
from retrieval.core.errors import DataError
from retrieval.evaluation.datasets import REVISITED_NAMES, load_class_folders, load_revisited, load_toy
from retrieval.evaluation.metrics import format_table
from retrieval.evaluation.run import evaluate_dataset, with_scales
from retrieval.loading import load_model
from retrieval.model.network import (
    MULTISCALE,
    build_network,
)
from retrieval.settings import load_settings


def default_cache() -> Path:
    """Where ``--dataset toy`` keeps its generated collection (``$GEMSEG_CACHE`` or ~/.cache)."""
    base = os.environ.get("GEMSEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gemseg")
    return Path(base) / "toy"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Evaluate retrieval: mAP and mP@10, Easy/Medium/Hard (revisited protocol).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("Examples:")[1]
        if "Examples:" in (__doc__ or "") else None)
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help="roxford5k | rparis6k | folder:DIR (DIR/<class>/*.jpg) | toy")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="roxford5k/rparis6k: folder holding <name>/gnd_<name>.pkl and <name>/jpg/ "
                        "(default: data); toy: where the collection is generated "
                        "(default: $GEMSEG_CACHE/toy or ~/.cache/gemseg/toy)")
    p.add_argument("--model", metavar="SPEC", default=None,
                   help="checkpoint .pt or YAML config (default: --config's model, else the default)")
    p.add_argument("--config", metavar="YAML", default=None,
                   help="settings file (model:, extract: sections)")
    p.add_argument("--qe", type=int, default=0, metavar="K", help="α-QE with K neighbours (0: off)")
    p.add_argument("--alpha", type=float, default=3.0, metavar="A",
                   help="α of α-QE and DBA (0: average expansion; default 3)")
    p.add_argument("--dba", type=int, default=0, metavar="K", help="DBA with K neighbours (0: off)")
    sc = p.add_mutually_exclusive_group()
    sc.add_argument("--multiscale", action="store_true",
                    help="describe at scales 1, 1/√2, 1/2 (default: the model's configured scales)")
    sc.add_argument("--single-scale", action="store_true", help="describe at scale 1 only")
    p.add_argument("--index", metavar="DIR", default=None,
                   help="cache of database descriptors: reused when built by the same model, "
                        "written there otherwise")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the config's)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    return p


def load_dataset(name: str, data_root: Optional[str]):
    if name in REVISITED_NAMES:
        return load_revisited(name, data_root or "data")
    if name.startswith("folder:"):
        return load_class_folders(name[len("folder:"):])
    if name == "toy":
        return load_toy(data_root or default_cache())
    raise DataError(f"unknown dataset '{name}'; choose roxford5k, rparis6k, folder:DIR or toy")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.qe < 0 or args.dba < 0:
        raise DataError("--qe and --dba take a number of neighbours ≥ 0")
    if args.alpha < 0:
        raise DataError("--alpha must be ≥ 0")
    ds = load_dataset(args.dataset, args.data_root)  # before the model: a missing dataset is quick

    settings = load_settings(args.config)
    net = load_model(args.model) if args.model else build_network(settings.model)
    scales = MULTISCALE if args.multiscale else (1.0,) if args.single_scale else None
    with_scales(net, scales)
    report = evaluate_dataset(
        net, ds, qe_k=args.qe, alpha=args.alpha, dba_k=args.dba, cache=args.index,
        batch_size=settings.extract.batch_size, workers=settings.extract.workers,
        device=args.device or settings.extract.device, progress=sys.stderr.isatty())
    if args.json:
        print_json(report)
        return EXIT_OK
    scales_txt = ",".join(f"{s:g}" for s in report["scales"])
    rerank = []
    if args.dba:
        rerank.append(f"DBA k={args.dba}")
    if args.qe:
        rerank.append(f"α-QE k={args.qe}")
    if rerank:
        rerank.append(f"α={args.alpha:g}")
    print(f"{report['dataset']}: {report['n_queries']} queries, {report['n_db']} images; "
          f"model {report['backbone']} ({report['fingerprint']}), size {report['image_size']}, "
          f"scales {scales_txt}; re-ranking: {', '.join(rerank) or 'none'}")
    label = "+".join(["base"] + (["DBA"] if args.dba else []) + (["QE"] if args.qe else []))
    print(format_table(report, label))
    return EXIT_OK


if __name__ == "__main__":
    main_wrapper(main)
