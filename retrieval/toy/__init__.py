"""Generated toy data with known truth: an instance-retrieval collection and co-segmentation sets.

numpy + PIL only (no torch); of the project, only :mod:`retrieval.core`. Two generators share one
renderer. Modules, each importing only those listed before it:

* :mod:`~retrieval.toy.streams` — the seed-stream ids: everything is deterministic from ``seed``, each
  object, view, distractor and set image drawing from its own ``default_rng([seed, stream, i, j])``;
* :mod:`~retrieval.toy.geometry` — unit shapes, polygons, rasterising, homographies;
* :mod:`~retrieval.toy.textures` — colours and procedural textures (stripes, checks, dots, gradients,
  rings, waves, zigzags);
* :mod:`~retrieval.toy.objects` — :class:`ToyObject` and the synthetic creatures made of textured parts;
* :mod:`~retrieval.toy.photos` — ``source="photos"``: objects cut out of the scikit-image sample photos
  (Chelsea the cat's face, the coffee cup, the rocket, ...) and crops of real textures (brick, grass,
  gravel) and photos for backgrounds;
* :mod:`~retrieval.toy.backgrounds` — noise/texture/photo backgrounds, clutter, shape compositing;
* :mod:`~retrieval.toy.render` — the view renderer (scale, rotation, perspective, crop, occlusion,
  colour, blur) with the measured visibility;
* :mod:`~retrieval.toy.output` — the output folder and the image / mask / part-map files;
* :mod:`~retrieval.toy.photo_views` — folders of real-photo classes (halves of scikit-image photos, augmented views) for training tests and benchmarks;
* :mod:`~retrieval.toy.coseg_sets` — :func:`make_coseg_sets`, co-segmentation sets in the iCoseg layout;
* :mod:`~retrieval.toy.collection` — :func:`make_retrieval_collection`, :class:`ToyCollection`,
  :func:`export_class_folders` and the revisited-style ground-truth rule.
"""
