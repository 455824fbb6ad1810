"""Evaluate a descriptor model on a retrieval benchmark (revisited Oxford/Paris protocol).

Examples:
  gemseg evaluate --dataset roxford5k --data-root data
  gemseg evaluate --dataset toy --qe 2 --dba 2 --multiscale
  gemseg evaluate --dataset toy --rerank qe:k=2,coseg:K=20:k=3
  gemseg evaluate --dataset folder:photos/labeled --model runs/gem.pt --json

Prints mAP and mP@10 for the Easy / Medium / Hard setups (in percent), the layout papers use; a
"-" is a setup with no positives. Under the table: what the columns mean for this dataset (a folder
of classes has no Hard set and Medium = Easy) and every file that is not a query, with the reason.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from retrieval.core.cli import EXIT_OK, add_common_flags, notice, print_json
from retrieval.evaluation.metrics import format_table
from retrieval.search.rerank.registry import reranker_names

JOB = "retrieval.jobs:run_evaluation"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--dataset", required=True, metavar="NAME",
                    help="roxford5k | rparis6k | folder:DIR (DIR/<class>/*.jpg) | toy")
    ap.add_argument("--data-root", metavar="DIR", default=None,
                    help="roxford5k/rparis6k: folder holding <name>/gnd_<name>.pkl and <name>/jpg/ "
                         "(default: data); toy: where the collection is generated "
                         "(default: $GEMSEG_CACHE/toy or ~/.cache/gemseg/toy)")
    ap.add_argument("--model", metavar="SPEC", default=None,
                    help="checkpoint .pt or YAML config (default: --config's model, else the default)")
    add_common_flags(ap, config="")
    ap.add_argument("--qe", type=int, default=0, metavar="K", help="α-QE with K neighbours (0: off)")
    ap.add_argument("--alpha", type=float, default=3.0, metavar="A",
                    help="α of α-QE and DBA (0: average expansion; default 3)")
    ap.add_argument("--dba", type=int, default=0, metavar="K", help="DBA with K neighbours (0: off)")
    ap.add_argument("--rerank", action="append", metavar="STEPS",
                    help=f"re-ranking steps in order after --qe/--coseg-rerank, e.g. qe:k=2,coseg:K=20 "
                         f"(names: {', '.join(reranker_names())})")
    ap.add_argument("--coseg-rerank", type=int, default=0, metavar="K",
                    help="re-rank each query's top K by co-segmentation (0: off; after DBA and α-QE)")
    ap.add_argument("--coseg-k", type=int, default=3, help="DFF factors of --coseg-rerank (default 3)")
    ap.add_argument("--coseg-weight", type=float, help="share of the masked score (1: replace; default 0.5)")
    sc = ap.add_mutually_exclusive_group()
    sc.add_argument("--multiscale", action="store_true",
                    help="describe at scales 1, 1/√2, 1/2 (default: the model's configured scales)")
    sc.add_argument("--single-scale", action="store_true", help="describe at scale 1 only")
    ap.add_argument("--index", metavar="DIR", default=None,
                    help="cache of database descriptors: reused when built by the same model, "
                         "written there otherwise")
    ap.add_argument("--search-index", action="store_true",
                    help="rank with the --index folder's own index (its factory, nprobe) instead of exactly")
    # input size and scales, for any model (cirtorch / dirtorch checkpoints default to 1024 px)
    ap.add_argument("--image-size", type=int, metavar="PX",
                    help="long side of the image at scale 1 (default: the model's)")
    ap.add_argument("--scales", type=float, nargs="+", metavar="S",
                    help="extraction scales, e.g. --scales 1 0.7071 0.5 (default: the model's; --scales wins over --multiscale/--single-scale)")


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    report = job(args.dataset, data_root=args.data_root, config=args.config, model=args.model,
                 qe=args.qe, alpha=args.alpha, dba=args.dba,
                 scales=args.scales or ("multi" if args.multiscale else "single" if args.single_scale else None),
                 index=args.index, device=args.device,
                 progress=sys.stderr.isatty() and not args.quiet, coseg_rerank=args.coseg_rerank,
                 coseg_k=args.coseg_k, coseg_weight=args.coseg_weight, steps=args.rerank,
                 search_index=args.search_index, image_size=args.image_size)
    if args.json:
        print_json(report)
        return EXIT_OK
    scales_txt = ",".join(f"{s:g}" for s in report["scales"])
    rerank = ([f"DBA k={args.dba} α={args.alpha:g}"] if args.dba else []) + report["rerank"]
    print(f"{report['dataset']}: {report['n_queries']} queries, {report['n_db']} images; "
          f"model {report['backbone']} ({report['fingerprint']}), size {report['image_size']}, "
          f"scales {scales_txt}; re-ranking: {', '.join(rerank) or 'none'}")
    label = "+".join(["base"] + (["DBA"] if args.dba else []) + [s.split(":")[0].replace("qe", "QE") for s in report["rerank"]])
    print(format_table(report, label))
    for note in report["notes"]:
        notice(f"note: {note}", args)
    if report["left_out"]:
        notice(f"not queries ({len(report['left_out'])}):", args)
        for item in report["left_out"][:20]:
            notice(f"  {item['path']}: {item['why']}", args)
        if len(report["left_out"]) > 20:
            notice(f"  … and {len(report['left_out']) - 20} more (--json lists them all)", args)
    return EXIT_OK
