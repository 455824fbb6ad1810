"""Find duplicates in a photo collection: exact copies, near copies (resized, re-compressed,
cropped, edited) and similar shots, grouped, with a suggested copy to keep.

  gemseg dedup --images photos/ --html dups.html     # describe, group, show (nothing is changed)
  gemseg dedup --index index/ --csv dups.csv --png dups.png   # reuse an index's descriptors
  gemseg dedup --images photos/ --index index/ --calibrate    # thresholds of this model, kept in index/
  gemseg dedup --images photos/ --move-to extras/    # move the copies aside, with a manifest
  gemseg dedup --undo extras/dedup-moves-20260101-120000.json   # and back, bit for bit
  gemseg dedup --images photos/ --json               # {"groups": [{"kind", "keep", "images": [...]}], "counts"}

Tiers: exact (same bytes or same pixels), near (descriptor similarity ≥ the near threshold,
confirmed by spatial verification when available), similar (≥ the similar threshold: the same
scene or object, not a copy). Thresholds come from --thresholds FILE, else the index folder's
dedup_thresholds.json (or <checkpoint>.dedup.json), else the defaults calibrated for the default
model; --calibrate measures them for the model on generated edits of built-in photos. Nothing is ever
deleted: --move-to moves the copies of exact and near groups (--move-kinds) and writes a manifest
first, so a killed move is finished by running it again, or undone with --undo.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict

from retrieval.core.cli import add_common_flags, notice, print_json

JOB = "retrieval.jobs:run_dedup"
SHOWN = 20


def _kinds(text: str) -> list:
    return [k.strip() for k in text.split(",") if k.strip()]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--images", help="folder of images (recursive) or a .txt list of paths")
    ap.add_argument("--index", help="index folder (tools/index.py): its descriptors and model; with --images, "
                                    "the images are added to it first")
    ap.add_argument("--model", help="model checkpoint or YAML config (default: the index's model, or the default)")
    add_common_flags(ap, config="")
    ap.add_argument("--thresholds", metavar="FILE", help="thresholds file (JSON keyed by model fingerprint) "
                                                         "to read, or to write with --calibrate")
    ap.add_argument("--calibrate", action="store_true",
                    help="measure the model's thresholds on generated edits of built-in photos and store them")
    ap.add_argument("--near", type=float, help="override the near threshold (cosine similarity)")
    ap.add_argument("--similar", type=float, help="override the similar threshold (cosine similarity)")
    ap.add_argument("--slack", type=float, help="override the chain cap's slack below a tier's threshold")
    ap.add_argument("--min-inliers", type=int, help="verified matches that confirm a near pair")
    ap.add_argument("--no-verify", action="store_true", help="do not confirm near pairs by spatial verification")
    ap.add_argument("--html", help="write an HTML page of the groups (thumbnails, matches of near pairs)")
    ap.add_argument("--png", help="write a contact sheet PNG of the groups")
    ap.add_argument("--csv", help="write the groups as CSV (group, kind, keep, path, score, reason)")
    ap.add_argument("--move-to", metavar="DIR", help="move the copies (not the keepers) into DIR, with a manifest")
    ap.add_argument("--move-kinds", type=_kinds, default=["exact", "near"], metavar="KINDS",
                    help="groups whose copies --move-to moves (default exact,near; similar shots are not copies)")
    ap.add_argument("--undo", metavar="MANIFEST", help="move the files of a --move-to manifest back")
    ap.add_argument("--batch-size", type=int, help="images per forward pass")
    ap.add_argument("--workers", type=int, help="image decoding processes")


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.undo is None and args.images is None and args.index is None:
        ap.error("give --images DIR or --index DIR (or --undo MANIFEST)")
    if args.undo is not None and (args.images or args.index or args.move_to):
        ap.error("--undo MANIFEST takes no --images, --index or --move-to")


def _print(out: Dict[str, Any]) -> None:
    shown = 0
    for k, g in enumerate(out["groups"]):
        if shown >= SHOWN:
            print(f"… and {len(out['groups']) - shown} more groups (all of them: --json, --csv or --html)")
            break
        print(f"{g['kind']:<8} group {k}: {len(g['images'])} images")
        for m, img in enumerate(g["images"]):
            print(f"  {'keep ' if m == 0 else format(img['score'], '.3f')}  "
                  f"{img['path']}  ({img['reason']})")
        shown += 1
    c = out["counts"]
    t = out["thresholds"]
    print(f"{c['images']} images: {c['groups']['exact']} exact, {c['groups']['near']} near, {c['groups']['similar']} "
          f"similar groups; {c['duplicates']} copies could be moved aside "
          f"(near ≥ {t['near']:g}, similar ≥ {t['similar']:g}; {t['source']}"
          f"{'; near pairs verified' if t['verified'] else ''})")
    for f in out.get("failures", [])[:SHOWN]:
        print(f"skipped: {f['path']}: {f['reason']}", file=sys.stderr)


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    out = job(args.images, args.index, model=args.model, config=args.config, device=args.device,
              thresholds=args.thresholds, near=args.near, similar=args.similar, slack=args.slack,
              min_inliers=args.min_inliers, calibrate=args.calibrate, verify=not args.no_verify,
              html=args.html, png=args.png, csv=args.csv, move_to=args.move_to, move_kinds=args.move_kinds,
              undo=args.undo, progress=not (args.quiet or args.json), batch_size=args.batch_size,
              workers=args.workers)
    if args.json:
        print_json(out)
    elif "undo" in out:
        u = out["undo"]
        print(f"moved {u['moved']} files back ({u['already']} were already in place); manifest {u['manifest']}")
    else:
        _print(out)
    if "moves" in out:
        m = out["moves"]
        notice(f"moved {m['moved']} copies to {args.move_to}; undo with: gemseg dedup --undo {m['manifest']}", args)
    for w in out.get("written", []):
        notice(f"wrote {w}", args)
    return 0
