"""gemseg's co-segmentation head: Deep Feature Factorization (NMF of CNN activations).

The public API::

    import cosegment
    from retrieval.core.backbone import build_backbone

    bb = build_backbone("efficientnet_lite0").eval()
    report = cosegment.cosegment("photos/", backbone=bb, config=cosegment.CosegConfig(k=3), out="coseg_out")
    report.as_dict()                                       # what tools/coseg.py --json prints
    learned = cosegment.learn_concepts(bb, paths, k=3, save_to="concepts.pt")  # H, object factors, layer

:func:`cosegment` (:mod:`cosegment.pipeline`) is what ``tools/coseg.py`` runs; :class:`CosegConfig`
is the ``coseg:`` config section (:func:`load_coseg_config` reads it from YAML). Object factors are
numbered from 0 everywhere; part label maps hold 0 for the background and ``j + 1`` for factor j.

The rooms: ``factorizers`` (nmf, sigmoid_nmf, deep_semi_nmf; one ``factorize()``), ``activations``
(images → layer activations), ``dff`` (factorising, heat maps, object-factor rule), ``masks``,
``segmentation`` (one set, stage by stage), ``pipeline`` (end to end), ``outputs`` (the files a run
writes), ``render`` (pictures), ``concept_file``, ``annotations`` (ground truth on disk), ``metrics``,
``config``.
"""
from cosegment.config import CosegConfig, load_coseg_config
from cosegment.pipeline import CosegReport, LearnedConcepts, cosegment, learn_concepts

__all__ = ["CosegConfig", "CosegReport", "LearnedConcepts", "cosegment", "learn_concepts", "load_coseg_config"]
