"""Duplicates and groups in a photo collection (``gemseg dedup``), one concept per module.

* :mod:`~retrieval.dedup.edits` — generated edits (resize, JPEG, crop, tone, rotation, text) with seeds;
* :mod:`~retrieval.dedup.planted` — a photo folder with planted duplicates and known truth;
* :mod:`~retrieval.dedup.thresholds` — the tiers' thresholds: the calibration rule, the file that keeps them;
* :mod:`~retrieval.dedup.calibration` — ``--calibrate``: thresholds of a model measured on generated edits;
* :mod:`~retrieval.dedup.exact` — the exact tier: equal bytes or equal decoded pixels;
* :mod:`~retrieval.dedup.pairs` — every pair above a threshold (faiss range search; IVF beyond a size);
* :mod:`~retrieval.dedup.groups` — connected components with a cap that splits chains;
* :mod:`~retrieval.dedup.keeper` — the copy to keep (resolution, compression, age) and why;
* :mod:`~retrieval.dedup.confirm` — spatial verification of near pairs;
* :mod:`~retrieval.dedup.finder` — the tiers, groups and keepers of a described collection;
* :mod:`~retrieval.dedup.report` — CSV, HTML page and PNG contact sheet of the groups;
* :mod:`~retrieval.dedup.moves` — moving copies aside with a manifest, resuming, undoing.
"""
