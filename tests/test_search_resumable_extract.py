"""retrieval.search.resumable_extract: an interrupted description resumes (only the rest is described,
the rows equal an uninterrupted run's), changed files are described again, another model's work is
discarded, and chunks grow towards CHUNK_SECONDS."""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import random_images

import retrieval.search.resumable_extract as rx
from retrieval.model.network import ModelConfig, build_network
from retrieval.search.collection import file_stat
from retrieval.search.extract import extract_descriptors


def test_chunks_grow_towards_the_target_time_and_at_most_double():
    assert rx.next_chunk(32, rx.CHUNK_SECONDS) == 32
    assert rx.next_chunk(32, 0.01) == 64  # fast: doubles, no more
    assert rx.next_chunk(100, rx.CHUNK_SECONDS * 4) == rx.FIRST_CHUNK  # slow: shrinks, not below the first
    assert rx.next_chunk(1000, rx.CHUNK_SECONDS / 1.5) == 1500
    assert rx.next_chunk(rx.MAX_CHUNK, 0.0) == rx.MAX_CHUNK


def _spy(monkeypatch, fail_on_call=None):
    """Record the paths each extract_descriptors call describes; raise KeyboardInterrupt on call
    number ``fail_on_call`` (1-based), as a Ctrl-C in the middle of the run."""
    calls = []
    real = rx.extract_descriptors

    def spy(net, paths, **kw):
        calls.append(list(paths))
        if fail_on_call is not None and len(calls) == fail_on_call:
            raise KeyboardInterrupt
        return real(net, paths, **kw)

    monkeypatch.setattr(rx, "extract_descriptors", spy)
    return calls


@pytest.mark.slow
def test_an_interrupted_run_describes_only_the_rest(small_net, tmp_path, monkeypatch):
    """Before issue 27 nothing was kept: the re-run described all 70 images again."""
    paths = [str(p.resolve()) for p in random_images(tmp_path / "img", 70, size=(40, 48), seed=2)]
    (tmp_path / "img" / "bad.jpg").write_bytes(b"not an image")
    paths.insert(5, str((tmp_path / "img" / "bad.jpg").resolve()))
    stats = {p: file_stat(p) for p in paths}
    out = tmp_path / "ix"
    monkeypatch.setattr(rx, "CHUNK_SECONDS", 1e9)  # chunks double: 32, 64
    calls = _spy(monkeypatch, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        rx.extract_resumably(small_net, paths, stats, out, batch_size=4, workers=0, progress=False)
    assert len(calls) == 2 and len(calls[0]) == rx.FIRST_CHUNK
    assert (rx.work_dir(out) / "shards" / "000000" / "skipped.json").is_file()

    calls = _spy(monkeypatch)
    ex, resumed = rx.extract_resumably(small_net, paths, stats, out, batch_size=4, workers=0, progress=False)
    first = {p for p in paths[:rx.FIRST_CHUNK] if not p.endswith("bad.jpg")}  # the first chunk's good files
    assert resumed == len(first)
    assert sum(len(c) for c in calls) == len(paths) - resumed  # only the rest (the bad file tried again)
    assert not first & {p for c in calls for p in c}
    ref = extract_descriptors(small_net, paths, batch_size=4, workers=0, progress=False)
    assert ex.paths == ref.paths and [p for p, _ in ex.failures] == [paths[5]]
    np.testing.assert_allclose(ex.descriptors, ref.descriptors, atol=1e-5)
    rx.discard_work(out)
    assert not rx.work_dir(out).exists()


@pytest.mark.slow
def test_a_changed_file_or_another_model_is_described_again(small_net, tmp_path, monkeypatch):
    paths = [str(p.resolve()) for p in random_images(tmp_path / "img", 6, size=(40, 48), seed=4)]
    out = tmp_path / "ix"
    rx.extract_resumably(small_net, paths, {p: file_stat(p) for p in paths}, out, workers=0, progress=False)
    os.utime(paths[2], ns=(1, 1))  # touched since: its description is stale
    calls = _spy(monkeypatch)
    _, resumed = rx.extract_resumably(small_net, paths, {p: file_stat(p) for p in paths}, out, workers=0,
                                      progress=False)
    assert resumed == 5 and calls == [[paths[2]]]
    other = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=48, scales=[1.0]))
    calls = _spy(monkeypatch)
    ex, resumed = rx.extract_resumably(other, paths, {p: file_stat(p) for p in paths}, out, workers=0,
                                       progress=False)
    assert resumed == 0 and calls == [paths] and ex.descriptors.shape == (6, other.dim)
