"""Describing, indexing and searching a collection.

* :mod:`~retrieval.search.extract` — batched, multi-scale descriptors of image files;
* :mod:`~retrieval.search.onnx_extract` — descriptors on onnxruntime from an exported model, multi-scale around the graph;
* :mod:`~retrieval.search.shards` — a folder of descriptor shards with its manifest;
* :mod:`~retrieval.search.sharded_extract` — sharded, resumable extraction (one shard a task, ranks of torchrun / srun);
* :mod:`~retrieval.search.factory` — which faiss index: factory strings, templates, ``auto``, the one IVF check;
* :mod:`~retrieval.search.ivf_training` — training coarse quantizers of many lists (two-level k-means);
* :mod:`~retrieval.search.topk` — exact top-k over blocks, merging top-k lists, skipping removed ids;
* :mod:`~retrieval.search.tuning` — recall@k against exact search, the cheapest knob value reaching a recall;
* :mod:`~retrieval.search.ondisk` — IVF lists merged into a file (on-disk inverted lists);
* :mod:`~retrieval.search.paths_store` — ids ↔ paths, file stats and removed flags in SQLite;
* :mod:`~retrieval.search.descriptor_file` — the float32 descriptor file that grows in place;
* :mod:`~retrieval.search.index_config` — the ``index:`` section (factory, nprobe, exact re-ranking);
* :mod:`~retrieval.search.index_folder` — the index folder's files, meta.json, and the one writer that commits it;
* :mod:`~retrieval.search.index` — :class:`ImageIndex`: the searchable state (segments, adds, removals, search);
* :mod:`~retrieval.search.build` — an index folder built from shards under a memory budget;
* :mod:`~retrieval.search.compaction` — an index rewritten without its removed ids, in one segment;
* :mod:`~retrieval.search.expansion` — α-QE and DBA arithmetic, and the DBA index;
* :mod:`~retrieval.search.knn_graph` — the database's k-NN graph (exact, faiss), kept equal to brute force on add / remove / compact;
* :mod:`~retrieval.search.local_features` — local features of an image (RootSIFT): positions in its pixels, descriptors;
* :mod:`~retrieval.search.packed_features` — local features as data, one image's and packed per id (no torch);
* :mod:`~retrieval.search.verify` — spatial verification: mutual ratio-test matches, a robust fit (OpenCV MAGSAC/RANSAC), inliers;
* :mod:`~retrieval.search.query_box` — the one rule for a query's box (inside the image once rounded, else refused);
* :mod:`~retrieval.search.rerank` — the re-ranking steps of the query path, one module each (``qe``, ``coseg``, ``diffusion``, ``superglobal``, ``sv``);
* :mod:`~retrieval.search.query` — the one query path: describe, search, re-rank, hit records;
* :mod:`~retrieval.search.resumable_extract` — an index run's descriptions kept in shards beside it, so an interrupted run resumes;
* :mod:`~retrieval.search.collection` — :func:`index_images` and :func:`search_images` (``tools/index.py``, ``tools/search.py``);
* :mod:`~retrieval.search.hit_pages` — the HTML page and PNG contact sheet of hits.
"""
