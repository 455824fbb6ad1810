"""Search in a browser: an HTTP API and a local web page over one index (``tools/serve.py``).

* :mod:`~retrieval.serve.service` — :class:`SearchService`: index and model loaded once, searches through the query path,
  the index folder followed as other processes change it (a live index);
* :mod:`~retrieval.serve.uploads` — an upload decoded safely (decompression bombs refused), a box read;
* :mod:`~retrieval.serve.errors` — the service's errors and the HTTP status of each;
* :mod:`~retrieval.serve.access` — the bearer token: which paths need it, compared in constant time;
* :mod:`~retrieval.serve.metrics` — :class:`ServerMetrics`: the Prometheus metrics of ``/metrics``;
* :mod:`~retrieval.serve.app` — :func:`create_app`: the FastAPI routes, the page, one-line JSON errors, the body limit, the token, the probes;
* :mod:`~retrieval.serve.server` — :func:`serve`: bind, say where, serve until stopped.
* ``static/`` — the page (plain HTML, JS and CSS, served by the server itself: works offline).

The HTTP contract is in docs/serve.md. A new endpoint is one route in ``app`` calling one
``SearchService`` method, and a row of the route table there.
"""
