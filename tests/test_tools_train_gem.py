"""tools/train_gem.py: one-line errors (in-process and from a real process), corrupt images skipped
and reported, training with no labels, and a run resumed by two ranks under torchrun whose best.pt
indexes with tools/index.py --model."""
from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import (
    TINY_TRAIN_YAML,
    TINY_UNSUP_YAML,
    assert_one_line_error,
    class_folders,
    pattern_classes,
    random_images,
    run_tool,
    run_tool_process,
    torchrun,
)

from retrieval.model.checkpoint import load_checkpoint, read_checkpoint
from retrieval.search.index import ImageIndex


def test_tool_bad_input(tmp_path):
    """Bad input is one line and exit code 2 (in-process, as the tool's ``__main__`` runs it)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_TRAIN_YAML.format(data=tmp_path / "missing"))
    assert_one_line_error(run_tool("train_gem", "--config", cfg, "--out", tmp_path / "r"),
                          "missing", "training data not found")
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: {backbone: resnet18, weights: none}\ntrain: {data: x, nnun: 3}\n")
    assert_one_line_error(run_tool("train_gem", "--config", typo), "unknown key 'nnun'", "nnum")
    single = class_folders(tmp_path / "single", [3, 1, 2])
    assert_one_line_error(run_tool("train_gem", "--config", cfg, "--data", single, "--out", tmp_path / "r"),
                          "class 'class1'", "single image")
    assert_one_line_error(run_tool("train_gem", "--config", cfg, "--epochs", "0"), "--epochs", "≥ 1")


@pytest.mark.slow
def test_tool_bad_input_exit_code_of_a_real_process(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: {backbone: resnet18, weights: none}\ntrain: {data: x, nnun: 3}\n")
    assert_one_line_error(run_tool_process("train_gem", "--config", typo), "unknown key 'nnun'", "nnum")


@pytest.mark.slow
def test_tool_skips_and_reports_corrupt_image(tmp_path):
    data = class_folders(tmp_path / "d", [3, 3, 2], corrupt=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_TRAIN_YAML.format(data=data).replace("whitening: false", "whitening: true"))
    proc = run_tool("train_gem", "--config", cfg, "--out", tmp_path / "run", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "skipped 1 unreadable image(s):" in out and "bad.jpg" in out
    net = load_checkpoint(tmp_path / "run" / "best.pt")  # Lw learned on the 7 readable images' pairs
    assert net.has_whitening and net.config.whitening == "lw"


TINY_TRAIN = """\
model: {{backbone: resnet18, weights: none, image_size: 32, scales: [1.0]}}
train: {{data: {data}, epochs: 2, qsize: 6, poolsize: 12, nnum: 1, batch: 2, workers: 0, mine_batch: 8,
         val_fraction: 0.34, whitening: auto, whiten_pairs: 40, lr: 1.0e-4, device: cpu}}
"""


@pytest.mark.slow
def test_two_rank_run_resumes_and_its_best_pt_indexes(tmp_path):
    """Epoch 1 in one process, then ``torchrun --nproc_per_node 2 tools/train_gem.py --resume``:
    the 2 ranks continue from epoch 1 to 2 (validation described in parts), rank 0 alone writes the
    run folder and prints one summary, and its ``best.pt`` (with Lw) indexes with
    ``tools/index.py --model``."""
    data = pattern_classes(tmp_path / "data", n_classes=6)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(TINY_TRAIN.format(data=data))
    out = tmp_path / "run"
    first = run_tool("train_gem", "--config", cfg, "--out", out, "--epochs", "1", "--quiet")
    assert first.returncode == 0, first.stderr
    assert read_checkpoint(out / "last.pt")["extra"]["epoch"] == 1
    second = torchrun("tools/train_gem.py", "--config", cfg, "--out", out, "--resume", "--quiet", "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("resumed") == 1 and second.stderr.count("epoch   2/2") == 1, second.stderr
    res = json.loads(second.stdout)  # one JSON document: rank 1 printed nothing
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2]  # epochs 0 and 1 from the first run
    h2 = res["history"][2]
    assert h2["tuples"] == 6 and 0 < h2["val_map"] <= 1 and h2["loss"] > 0
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("epoch,") and rows[3].startswith("2,")
    assert read_checkpoint(out / "last.pt")["extra"]["epoch"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "log.csv"]
    best = load_checkpoint(out / "best.pt")  # the best validated candidate (whitening: auto picks its kind)
    assert best.config.whitening == read_checkpoint(out / "best.pt")["extra"]["whitening"] == res["whitening"]
    assert read_checkpoint(out / "best.pt")["extra"]["epoch"] == res["best_epoch"] in (0, 1, 2)
    idx = run_tool("index", "--images", data, "--model", out / "best.pt", "--out", tmp_path / "idx", "--quiet")
    assert idx.returncode == 0, idx.stderr
    assert ImageIndex.load(tmp_path / "idx").ntotal == 18


@pytest.mark.slow
def test_tool_trains_without_labels(tmp_path):
    """``tools/train_gem.py`` with an ``unsupervised:`` section: a quarter of the classes held out
    for validation, two cluster–train periods, the selection rule of supervised runs, one cluster
    per training image."""
    for c in range(4):
        random_images(tmp_path / "data" / f"class{c}", 5, size=(40, 40), seed=c)
    cfg = tmp_path / "u.yaml"
    cfg.write_text(TINY_UNSUP_YAML.format(data=tmp_path / "data"))
    proc = run_tool("train_gem", "--config", cfg, "--out", tmp_path / "run", "--quiet")
    assert proc.returncode == 0, proc.stderr
    clusters = list(csv.DictReader(open(tmp_path / "run" / "clusters.csv")))
    n_val = 20 - len(clusters)  # whole classes held out, never clustered nor trained on
    assert n_val > 0 and n_val % 5 == 0 and f"train: {len(clusters)} unlabeled images" in proc.stdout
    assert f"val:   {n_val} images" in proc.stdout, proc.stdout
    best = read_checkpoint(tmp_path / "run" / "best.pt")["extra"]
    assert f"best.pt = period {best['period']} + " in proc.stdout
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["period"]) for r in rows] == [0, 1, 2]
    assert all(not math.isnan(float(r["val_map"])) for r in rows)  # the held-out class validates
    assert len({r["cluster"] for r in clusters}) == 4  # final_clusters
    # best.pt: the simplest candidate unless a gain is significant; two held-out classes cannot show
    # one (the call needs 8 for 2 periods × 3 whitenings), so the unsupervised run keeps period 0
    # with no whitening and says why, as supervised runs do
    assert (best["period"], best["whitening"]) == (0, "none")
    assert f"warning: validation has 2 class(es) and {n_val} queries: too few to tell a real gain from noise " \
           "(at least 8 classes" in proc.stdout
    assert "best.pt is the starting network with no whitening: " in proc.stdout
    net = load_checkpoint(tmp_path / "run" / "best.pt")
    assert net.config.whitening == best["whitening"] and net.has_whitening == (best["whitening"] != "none")
    last = read_checkpoint(tmp_path / "run" / "last.pt")["extra"]
    assert last["period"] == 2 and last["epoch"] == 2 and "optimizer" not in last


@pytest.mark.slow
def test_tool_says_once_that_best_is_the_starting_network(tmp_path):
    """Issue 27 item 11: "best.pt is the starting network" was printed twice (the log's report and
    the summary). A run that cannot improve (lr 1e-12; 3 validation classes, too few to call a gain)
    says it once, with the reason, and ``--json`` carries the same sentence."""
    data = pattern_classes(tmp_path / "d", n_classes=6, per_class=3)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_TRAIN_YAML.format(data=data).replace("val_fraction: 0.0", "val_fraction: 0.5, lr: 1.0e-12")
                   .replace("whitening: false", "whitening: none"))
    proc = run_tool("train_gem", "--config", cfg, "--out", tmp_path / "run", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("best.pt is the starting network") == 1, proc.stdout
    assert "best.pt is the starting network with no whitening: fine-tuning did not improve validation mAP" \
        in proc.stdout
    js = run_tool("train_gem", "--config", cfg, "--out", tmp_path / "run2", "--json")
    doc = json.loads(js.stdout)
    assert doc["best_epoch"] == 0 and doc["selection"]["why"].startswith("best.pt is the starting network")
    assert doc["selection"]["classes"] == 3 and doc["selection"]["classes_needed"] == 5
