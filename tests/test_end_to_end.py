"""End to end: the toy collection indexed and searched through the tools; the default model on
real photos."""
import json

import numpy as np
import pytest
from conftest import run_tool_process
from PIL import Image

from retrieval.toy.collection import make_retrieval_collection

FAST_DEFAULT = """\
model:
  backbone: efficientnet_lite0
  weights: imagenet
  image_size: 96
  scales: [1.0]
extract:
  workers: 0
"""


@pytest.mark.slow
def test_toy_collection_index_and_search_as_subprocesses(tmp_path):
    """The demo's collection (real-photo objects in generated views) at 96 px, through the tools
    run as real processes (every other tool test runs them in-process)."""
    pytest.importorskip("skimage")
    coll = make_retrieval_collection(tmp_path / "toy", n_objects=5, views=5, distractors=5,
                                     image_size=96, seed=3, source="photos")
    cfg = tmp_path / "fast.yaml"
    cfg.write_text(FAST_DEFAULT)
    proc = run_tool_process("index", "--images", coll.images_dir, "--config", cfg, "--out", tmp_path / "ix", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"] == len(coll.db_paths)
    proc = run_tool_process("search", "--query", *coll.query_paths, "--index", tmp_path / "ix", "--top", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    label = {p: l for p, l in zip(coll.db_paths, coll.db_labels)}
    precision = [np.mean([label[h["path"]] == ql for h in r["hits"]])
                 for r, ql in zip(results, coll.query_labels)]
    # each object has 4 database views (chance: 4/25); most of a query's top 4 are views of it
    assert np.mean(precision) >= 0.6, precision


@pytest.mark.slow
def test_default_model_finds_the_photo_a_crop_came_from(tmp_path):
    data = pytest.importorskip("skimage.data")
    from retrieval.model.network import ModelConfig, build_network
    from retrieval.search.extract import describe_pil, extract_descriptors
    from retrieval.search.index import ImageIndex

    photos = {"chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket(),
              "astronaut": data.astronaut(), "motorcycle": data.stereo_motorcycle()[0],
              "brick": data.brick(), "grass": data.grass(), "gravel": data.gravel()}
    paths = []
    for name, arr in photos.items():
        img = Image.fromarray(arr).convert("RGB")
        img.thumbnail((160, 160))
        img.save(tmp_path / f"{name}.jpg", quality=92)
        paths.append(tmp_path / f"{name}.jpg")
    net = build_network(ModelConfig(image_size=160, scales=[1.0]))
    ex = extract_descriptors(net, paths, progress=False)
    index = ImageIndex(net.dim, fingerprint=net.fingerprint())
    index.add(ex.descriptors, ex.paths)
    for i, p in enumerate(paths[:5]):  # the object photos
        img = Image.open(p)
        w, h = img.size
        crop = img.crop((w // 5, h // 6, w - w // 6, h - h // 5))  # an off-centre 65 % crop
        _, ids = index.search(describe_pil(net, crop), 1, fingerprint=net.fingerprint())
        assert ids[0, 0] == i, (p.name, index.paths[ids[0, 0]])
