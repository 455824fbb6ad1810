"""Search in a browser: an HTTP API and a local web page over one index (``tools/serve.py``).

* :mod:`retrieval.serve.service` — :class:`SearchService`: the index and its model loaded once;
  search by upload or by indexed id (forward passes in a bounded pool, faiss searches concurrent),
  thumbnails of indexed images only, co-segmentation of a query and its hits. No HTTP in it.
* :mod:`retrieval.serve.uploads` — decoding an upload safely (decompression bombs refused) and
  reading a box.
* :mod:`retrieval.serve.app` — :func:`create_app`: the FastAPI application (JSON API, the page,
  one-line JSON errors, the upload size limit).
* :mod:`retrieval.serve.server` — :func:`serve`: bind, say where, serve until stopped.
* ``static/`` — the page (plain HTML, JS and CSS, served by the server itself: works offline).

The HTTP contract is in docs/serve.md.
"""
