"""Serve an index over HTTP: a JSON API and a search page for the browser.

  gemseg serve --index index/                 # http://127.0.0.1:8000 : drop an image, draw a box
  gemseg serve --index index/ --port 0        # any free port (printed)
  GEMSEG_TOKEN=$(cat token.txt) gemseg serve --index index/ --host 0.0.0.0
                                              # reachable from other machines, with a token

Loads the model that built the index (or --model) and the index once, prints
"serving http://HOST:PORT" when ready, and serves until Ctrl-C; a new commit of the index folder
(tools/index.py growing, pruning or compacting it) is served within --reload-interval seconds.
Health: /healthz, /readyz; Prometheus metrics: /metrics. The API is described in docs/serve.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict

JOB = "retrieval.serve.server:serve"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--index", default="index", help="index folder made by tools/index.py (default: index/)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    ap.add_argument("--model", help="model checkpoint or YAML config (default: the index's own model)")
    ap.add_argument("--concepts", help="concept file for concept-masked GeM (default: the index's own, if any)")
    ap.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB (default 20)")
    ap.add_argument("--workers", type=int, default=1, help="forward passes at once on the CPU (default 1; "
                                                            "a GPU runs one at a time)")
    ap.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--json", action="store_true", help="print the ready line as JSON: {\"serving\": URL, ...info}")
    ap.add_argument("--token", help="bearer token every API, image and metrics request needs (default: "
                                    "$GEMSEG_TOKEN; none: open to whoever reaches the port); 16+ characters")
    ap.add_argument("--reload-interval", type=float, default=1.0, metavar="S",
                    help="seconds between looks at the index folder for a new commit (default 1; 0: never reload)")


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        ap.error("--port must be 0 … 65535")
    if args.max_upload_mb <= 0:
        ap.error("--max-upload-mb must be > 0")
    if args.workers < 1:
        ap.error("--workers must be ≥ 1")
    if not args.reload_interval >= 0:
        ap.error("--reload-interval must be ≥ 0")


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    def ready(url: str, info: Dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(dict(info, serving=url)), flush=True)
        else:
            print(f"serving {url}  ({info['images']} images, {info['factory']}, model {info['model']}, "
                  f"{info['device']}); Ctrl-C stops", flush=True)

    job(args.index, args.host, args.port, model=args.model, concepts=args.concepts,
        max_upload_mb=args.max_upload_mb, forward_workers=args.workers, device=args.device, token=args.token,
        reload_interval=args.reload_interval, on_ready=ready,
        warn=lambda line: print(line, file=sys.stderr, flush=True))
    return 0
