"""User-facing errors.

Every error a user can cause (a bad image, a config typo, an index made by another model, missing
weights) is a :class:`GemsegError`. Its message is one line that says what is wrong and what to do;
the tools print it and exit with code 2 (see :mod:`retrieval.core.cli`), never a traceback.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable, Union


class GemsegError(Exception):
    """Base class: a one-line message meant for the user."""


class ImageError(GemsegError):
    """An image file that cannot be used: missing, unreadable, truncated or not an image."""

    def __init__(self, path: Union[str, Path], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(GemsegError):
    """A configuration file or value that is invalid (unknown key, wrong type, bad value)."""


class DataError(GemsegError):
    """A data source that cannot be used: empty folder, missing path, malformed list or labels."""


class WeightsError(GemsegError):
    """Model weights that cannot be loaded (offline download, missing or foreign checkpoint)."""


class ModelMismatchError(GemsegError):
    """An index, descriptor or concept file made by a different model than the one in use."""


class ResourceError(GemsegError):
    """The machine cannot do what was asked: no CUDA device, or out of (GPU) memory."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of ``str(error)``, at most ``limit`` characters: for one-line messages that
    quote a library's own (often multi-line) error."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
