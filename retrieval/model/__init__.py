"""The descriptor model.

* :mod:`~retrieval.model.pooling` — GeM, MAC, SPoC, R-MAC, masked GeM;
* :mod:`~retrieval.model.whitening` — learned (Lw) and PCA whitening;
* :mod:`~retrieval.model.network` — backbone → pooling → L2 → whitening → L2, and its fingerprint;
* :mod:`~retrieval.model.checkpoint` — saving and loading a network;
* :mod:`~retrieval.model.cirtorch` — cirtorch checkpoints (whiten layer, precomputed Lw, its multi-scale rule);
* :mod:`~retrieval.model.dirtorch` — dirtorch (AP-GeM) checkpoints with their PCA whitening;
* :mod:`~retrieval.model.onnx_export` — the descriptor network written as ONNX (dynamic H, W);
* :mod:`~retrieval.model.concepts` — concept-masked pooling from DFF concepts.
"""
