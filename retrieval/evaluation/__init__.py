"""Evaluation with the revisited Oxford/Paris protocol.

* :mod:`~retrieval.evaluation.metrics` — AP, mAP and mP@k for Easy / Medium / Hard;
* :mod:`~retrieval.evaluation.datasets` — Oxford/Paris, folders of classes and the toy collection behind one :class:`EvalDataset`;
* :mod:`~retrieval.evaluation.run` — describe, rank through the query path, re-rank, score;
* :mod:`~retrieval.evaluation.significance` — is a paired gain real: cluster bootstrap, max-T over several candidates, sign test.
"""
