"""The ``gemseg`` command and its subcommands, one module each (``tools/<name>.py`` runs the same).

* :mod:`~retrieval.commands.main` — ``gemseg`` itself: the commands by name, ``--help``, ``--version``, running one;
* :mod:`~retrieval.commands.index` — ``gemseg index``: describe images into an index (or build one from shards, compact one);
* :mod:`~retrieval.commands.search` — ``gemseg search``: query an index by image or stored id, re-ranked;
* :mod:`~retrieval.commands.serve` — ``gemseg serve``: the HTTP API and the page;
* :mod:`~retrieval.commands.extract` — ``gemseg extract``: sharded, resumable descriptors;
* :mod:`~retrieval.commands.train` — ``gemseg train``: fine-tune (``tools/train_gem.py``);
* :mod:`~retrieval.commands.coseg` — ``gemseg coseg``: co-segment image sets;
* :mod:`~retrieval.commands.evaluate` — ``gemseg evaluate``: revisited mAP on a benchmark;
* :mod:`~retrieval.commands.demo` — ``gemseg demo``: the built-in demo;
* :mod:`~retrieval.commands.export` — ``gemseg export``: a model written as ONNX;
* :mod:`~retrieval.commands.dedup` — ``gemseg dedup``: duplicates and groups, a keeper each, moves that undo.
"""
