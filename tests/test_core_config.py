"""retrieval.core.config: nested dicts (from YAML) into nested dataclasses: values checked against
the fields' types, unknown keys refused by name with the closest one, one-line errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import pytest

from retrieval.core.config import from_dict, read_yaml, suggest, to_dict
from retrieval.core.errors import ConfigError


@dataclass
class Inner:
    size: int = 8
    scales: List[float] = field(default_factory=lambda: [1.0])

    def validate(self) -> None:
        if self.size < 1:
            raise ConfigError("inner.size: must be ≥ 1")


@dataclass
class Outer:
    name: str = "x"
    lr: float = 0.1
    on: bool = True
    box: Optional[Tuple[int, int]] = None
    inner: Inner = field(default_factory=Inner)


def test_nested_values_are_coerced_and_validated():
    c = from_dict(Outer, {"name": 5, "lr": "1e-6", "box": [1, 2], "inner": {"size": 3, "scales": [1, 0.5]}})
    assert c == Outer(name="5", lr=1e-6, on=True, box=(1, 2), inner=Inner(size=3, scales=[1.0, 0.5]))
    assert from_dict(Outer, None) == Outer()
    assert to_dict(c) == {"name": "5", "lr": 1e-6, "on": True, "box": [1, 2],
                          "inner": {"size": 3, "scales": [1.0, 0.5]}}
    assert from_dict(Outer, to_dict(c)) == c  # what a checkpoint stores reads back
    with pytest.raises(ConfigError, match="inner.size: must be ≥ 1"):
        from_dict(Outer, {"inner": {"size": 0}})  # each dataclass validates itself


@pytest.mark.parametrize("data, needle", [
    ({"nmae": "y"}, "cfg: unknown key 'nmae' (did you mean 'name'?)"),
    ({"zzz": 1}, "valid keys: box, inner, lr, name, on"),
    ({"on": "yes"}, "cfg.on: expected true/false, got 'yes'"),
    ({"lr": "fast"}, "cfg.lr: expected a number"),
    ({"inner": {"size": 2.5}}, "cfg.inner.size: expected an integer"),
    ({"inner": {"scales": 1.0}}, "cfg.inner.scales: expected a list"),
    ({"inner": [1]}, "cfg.inner: expected a mapping"),
])
def test_bad_values_are_one_line_errors_naming_where(data, needle):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data, "cfg")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_yaml_files(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  backbone: resnet18\n")
    assert read_yaml(tmp_path / "a.yaml") == {"model": {"backbone": "resnet18"}}
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        read_yaml(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "nope.yaml")
    assert suggest("epoch", ["epochs", "lr"]) == " (did you mean 'epochs'?)"
