"""retrieval.serve.errors: each one-line error of the service answers with its HTTP status."""
from __future__ import annotations

import pytest

from retrieval.core.errors import ConfigError, DataError, GemsegError, ImageError, ModelMismatchError, ResourceError
from retrieval.serve.errors import BadParameterError, NotFoundError, TooLargeError, status_for


@pytest.mark.parametrize("error, status", [
    (NotFoundError("no indexed image with id '9'"), 404),
    (TooLargeError("upload over the limit"), 413),
    (ImageError("x.jpg", "not an image"), 400),
    (BadParameterError("top must be 1 … 1000"), 422),
    (DataError("unknown re-ranker"), 422),
    (ConfigError("bad value"), 422),
    (ModelMismatchError("another model"), 500),
    (ResourceError("out of memory"), 500),
])
def test_status_for_each_error(error, status):
    assert isinstance(error, GemsegError) and status_for(error) == status
