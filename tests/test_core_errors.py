"""retrieval.core.errors: the one-line errors a user can cause, and the helpers that keep them to
one line (a library's first line, a close name)."""
from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.core.errors import (
    ConfigError,
    DataError,
    GemsegError,
    ImageError,
    ModelMismatchError,
    ResourceError,
    WeightsError,
    did_you_mean,
    first_line,
)


@pytest.mark.parametrize("cls", [ConfigError, DataError, WeightsError, ModelMismatchError, ResourceError, ImageError])
def test_every_user_error_is_a_gemseg_error(cls):
    assert issubclass(cls, GemsegError) and issubclass(cls, Exception)


def test_an_image_error_names_the_file_and_the_reason():
    e = ImageError(Path("photos/a.jpg"), "truncated or corrupt image")
    assert (e.path, e.reason, str(e)) == ("photos/a.jpg", "truncated or corrupt image",
                                          "photos/a.jpg: truncated or corrupt image")


def test_first_line_and_did_you_mean():
    assert first_line(RuntimeError("size mismatch\n  at layer 3\n")) == "size mismatch"
    assert first_line(ValueError("")) == "ValueError" and first_line(ValueError("x" * 300), 10) == "x" * 10
    assert did_you_mean("resnt18", ["resnet18", "vgg16"]) == " (did you mean 'resnet18'?)"
    assert did_you_mean("zzz", ["resnet18", "vgg16"]) == ""
