"""Who may use the server: one shared bearer token (``--token`` or ``GEMSEG_TOKEN``).

With a token, every request that returns data (``/api/*``: searches, thumbnails, co-segmentation,
the index's description; ``/metrics``) must carry ``Authorization: Bearer <token>``; anything else
is answered 401 with ``WWW-Authenticate: Bearer``. The token is compared in constant time
(:func:`token_matches`: SHA-256 of both sides, then :func:`hmac.compare_digest`, so neither the
content nor the length leaks through timing).

Open without a token (:data:`OPEN_PATHS`): ``/healthz`` and ``/readyz`` (probes: they say only
"alive" and "loaded"), and the page's three static files (``/``, ``/app.js``, ``/style.css``: the
same for everyone, no data; a browser cannot send a bearer header when it navigates, so the page
asks for the token once and sends it with each of its own requests).

What the token does not do: it is not encryption (over plain HTTP it crosses the network in the
clear with every request: put TLS in front, e.g. a reverse proxy), it has no users, roles,
expiry or rate limit, and whoever holds it can read every indexed image.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Optional

from retrieval.core.errors import ConfigError

#: Paths answered without a token.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/app.js", "/style.css"})
#: The environment variable read when no ``--token`` is given.
TOKEN_ENV = "GEMSEG_TOKEN"
#: Shortest token accepted (a guessable token protects nothing).
MIN_TOKEN_LENGTH = 16


def resolve_token(token: Optional[str]) -> Optional[str]:
    """``token``, else ``$GEMSEG_TOKEN``, else None (no token: every request is served).

    Raises:
        ConfigError: a token shorter than :data:`MIN_TOKEN_LENGTH` characters, or with spaces or
            control characters (it could not be sent in a header as it is).
    """
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is None:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"the token must be at least {MIN_TOKEN_LENGTH} characters (got {len(token)}); "
                          "make one with: python -c \"import secrets; print(secrets.token_urlsafe(24))\"")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError("the token must be printable ASCII without spaces")
    return token


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def token_matches(authorization: Optional[bytes], token: str) -> bool:
    """Whether the ``Authorization`` header value ``authorization`` is ``Bearer <token>``
    (scheme case-insensitive), compared in constant time."""
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(b" ")
    ok_scheme = scheme.lower() == b"bearer"
    same = hmac.compare_digest(_digest(given.strip()), _digest(token.encode("ascii")))
    return ok_scheme and same
