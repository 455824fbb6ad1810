"""User-facing errors.

Every error a user can cause (a bad image, a config typo, an index made by another model, missing
weights) is a :class:`GemsegError`. Its message is one line that says what is wrong and what to do;
the tools print it and exit with code 2 (see :mod:`retrieval.cli`), never a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union


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
