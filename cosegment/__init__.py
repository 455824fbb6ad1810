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

The rooms:

* :mod:`~cosegment.factorizers` — nmf, sigmoid_nmf, deep_semi_nmf behind one ``factorize()``;
* :mod:`~cosegment.activations` — images → one layer's activations;
* :mod:`~cosegment.dff` — factorising activations, heat maps, the object-factor rules;
* :mod:`~cosegment.masks` — heat maps → masks, boxes, part labels;
* :mod:`~cosegment.segmentation` — one image set, stage by stage;
* :mod:`~cosegment.pipeline` — end to end (:func:`cosegment`, :func:`learn_concepts`);
* :mod:`~cosegment.outputs` — the files a run writes;
* :mod:`~cosegment.render` — pictures: overlays, legends, contact sheets;
* :mod:`~cosegment.concept_file` — concepts saved with their backbone and layer;
* :mod:`~cosegment.annotations` — ground truth and image sets on disk;
* :mod:`~cosegment.metrics` — Jaccard, precision, CorLoc, part mIoU;
* :mod:`~cosegment.config` — the ``coseg:`` section.
"""
from cosegment.config import CosegConfig, load_coseg_config
from cosegment.pipeline import CosegReport, LearnedConcepts, cosegment, learn_concepts

__all__ = ["CosegConfig", "CosegReport", "LearnedConcepts", "cosegment", "learn_concepts", "load_coseg_config"]
