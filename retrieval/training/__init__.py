"""Fine-tuning the descriptor network.

* :mod:`~retrieval.training.config` — the ``train:`` and ``unsupervised:`` sections (:class:`TrainConfig`, :class:`UnsupervisedConfig`);
* :mod:`~retrieval.training.pairs` — where matching pairs come from: class folders, a CSV, SfM-120k, clusters;
* :mod:`~retrieval.training.toy_data` — the generated toy collection as training data;
* :mod:`~retrieval.training.mining` — training tuples with hard negatives, re-mined each epoch;
* :mod:`~retrieval.training.loss` — contrastive and triplet losses;
* :mod:`~retrieval.training.epoch` — one epoch over the mined tuples;
* :mod:`~retrieval.training.validation` — validation mAP and the whitening learned with it;
* :mod:`~retrieval.training.selection` — which validated (step, whitening) ``best.pt`` holds;
* :mod:`~retrieval.training.results` — one stats row type and one result type for both drivers;
* :mod:`~retrieval.training.engine` — the one training loop: run folder, seeding, steps, checkpoints, resume;
* :mod:`~retrieval.training.distributed` — DDP: the process group, each rank's device, the collectives;
* :mod:`~retrieval.training.supervised` — the driver for labelled pairs;
* :mod:`~retrieval.training.cluster` — agglomerative clustering of descriptors (JULE-style);
* :mod:`~retrieval.training.unsupervised` — the driver with no labels: cluster, train, re-cluster.
"""
