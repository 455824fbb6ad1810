"""gemseg's retrieval head: GeM descriptors, learned whitening, faiss search, fine-tuning.

The public API, importable without knowing the rooms inside::

    import retrieval
    net = retrieval.load_model()                              # default model, or a YAML / checkpoint
    retrieval.index_images(net, "photos/", "index/")          # describe a folder, add it to an index
    index = retrieval.ImageIndex.load("index/")
    hits = retrieval.search_images(net, index, ["q.jpg"], top=5)
    retrieval.train("configs/train_toy.yaml", out="runs/toy")  # what tools/train_gem.py runs

The rooms (docs/design.md), floor by floor from the ground:

* :mod:`retrieval.core` — backbones, images, listing, config, io, errors, ranks, CLI plumbing;
* :mod:`retrieval.toy` — generated collections with known truth (no torch);
* :mod:`retrieval.model` — pooling, whitening, the descriptor network, checkpoints, concept masks;
* :mod:`retrieval.search` — extraction, indexes and their folder, the query path and its re-rankers;
* :mod:`retrieval.dedup` — duplicates and groups of a collection: tiers, calibration, keepers, undoable moves;
* :mod:`retrieval.evaluation` — datasets, metrics, an evaluation run;
* :mod:`retrieval.settings` — the YAML settings file, one dataclass per section;
* :mod:`retrieval.loading` — which model a tool uses (config, checkpoint, or the index's own);
* :mod:`retrieval.training` — pairs, mining, losses, the engine and its two drivers;
* :mod:`retrieval.serve` — the HTTP API and the page;
* :mod:`retrieval.demo` — the built-in demo;
* :mod:`retrieval.jobs` — what each tool runs, one function per tool;
* :mod:`retrieval.commands` — the ``gemseg`` command: each subcommand's flags and printing (``tools/*.py`` run the same).

The names below are resolved on first use (PEP 562), so ``import retrieval.core.images`` stays as
light as that module (the toy-data generator, for one, never loads torch).
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List

#: public name → the module that defines it
_API: Dict[str, str] = {
    "load_model": "retrieval.loading",
    "model_for_index": "retrieval.loading",
    "build_network": "retrieval.model.network",
    "DescriptorNet": "retrieval.model.network",
    "ModelConfig": "retrieval.model.network",
    "ImageIndex": "retrieval.search.index",
    "IndexConfig": "retrieval.search.index",
    "index_images": "retrieval.search.collection",
    "search_images": "retrieval.search.collection",
    "extract_descriptors": "retrieval.search.extract",
    "extract_shards": "retrieval.search.sharded_extract",
    "build_index_from_shards": "retrieval.search.build",
    "evaluate_dataset": "retrieval.evaluation.run",
    "load_settings": "retrieval.settings",
    "train": "retrieval.jobs",
    "GemsegError": "retrieval.core.errors",
}

__all__: List[str] = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'retrieval' has no attribute '{name}'")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_API))
