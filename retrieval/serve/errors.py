"""Errors of the HTTP service and the status each one answers with.

Every error is a one-line :class:`~retrieval.core.errors.GemsegError`; :func:`status_for` maps it to
the HTTP status of the JSON answer ``{"error": "<the line>"}``.
"""
from __future__ import annotations

from retrieval.core.errors import ConfigError, DataError, GemsegError, ImageError


class NotFoundError(GemsegError):
    """An unknown image id (or anything that is not an id: paths are never looked up)."""


class BadParameterError(GemsegError):
    """A request parameter out of range: top < 1, a box outside the image, k too large..."""


class TooLargeError(GemsegError):
    """An upload larger than the server's limit."""


def status_for(error: GemsegError) -> int:
    """The HTTP status of ``error``: 404 not found, 413 too large, 400 a bad image, 422 bad
    parameters or data, 500 anything else (a model mismatch, out of memory: the server's fault)."""
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, TooLargeError):
        return 413
    if isinstance(error, ImageError):
        return 400
    if isinstance(error, (BadParameterError, DataError, ConfigError)):
        return 422
    return 500
