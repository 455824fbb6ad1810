"""The re-ranking steps of the query path (:mod:`retrieval.search.query`), one module each.

* :mod:`~retrieval.search.rerank.step` — what a step is: :class:`Reranker` and the context it is given;
* :mod:`~retrieval.search.rerank.registry` — steps by name: registering, listing, reading ``qe:k=2,coseg:K=20``;
* :mod:`~retrieval.search.rerank.qe` — ``qe``: α-weighted query expansion;
* :mod:`~retrieval.search.rerank.coseg` — ``coseg``: co-segmentation re-ranking of the top K;
* :mod:`~retrieval.search.rerank.diffusion` — ``diffusion``: diffusion over the database's k-NN graph (Iscen et al. 2017);
* :mod:`~retrieval.search.rerank.superglobal` — ``superglobal``: SuperGlobal re-ranking on stored descriptors (Shao et al. 2023);
* :mod:`~retrieval.search.rerank.sv` — ``sv``: spatial verification of the top K (RootSIFT, MAGSAC homography), inlier matches on the hits.

A new re-ranker is one module here whose ``@register_reranker`` class has the module's name.
"""
