"""retrieval.training.toy_data: ``train.data: toy``: the generated collection made once and exported
as class folders, remade when its settings change; bad settings refused in one line."""
from __future__ import annotations

import pytest

from retrieval.core.errors import ConfigError
from retrieval.training.pairs import pairs_from_folders
from retrieval.training.toy_data import ToyData, prepare_toy_data


def test_class_folders_are_made_once_and_remade_when_the_settings_change(tmp_path):
    said = []
    toy = ToyData(root=str(tmp_path / "toy"), n_objects=2, views=3, image_size=32)
    classes = prepare_toy_data(toy, log=said.append)
    assert classes == tmp_path / "toy" / "classes" and len(said) == 1 and "2 objects x 3 views" in said[0]
    folders = sorted(p.name for p in classes.iterdir())
    assert len(folders) == 2 and pairs_from_folders(classes).n_classes == 2
    stamp = (tmp_path / "toy" / "params.json").stat().st_mtime_ns
    assert prepare_toy_data(toy, log=said.append) == classes and len(said) == 1  # nothing made again
    assert (tmp_path / "toy" / "params.json").stat().st_mtime_ns == stamp
    prepare_toy_data(ToyData(root=str(tmp_path / "toy"), n_objects=3, views=3, image_size=32), log=said.append)
    assert len(said) == 2 and len(list(classes.iterdir())) == 3  # other settings: made again, old classes gone


@pytest.mark.parametrize("kw, needle", [({"source": "drawings"}, "train.toy.source"), ({"views": 1}, "views ≥ 2"),
                                        ({"n_objects": 1}, "n_objects ≥ 2")])
def test_bad_settings_are_one_line_config_errors(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        ToyData(**kw).validate()
