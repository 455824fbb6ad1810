"""retrieval.serve.access: the token read from the flag or the environment, refused when weak, and
compared as the whole ``Bearer <token>`` value (the timing side is hmac's compare_digest on digests)."""
from __future__ import annotations

import pytest

from retrieval.core.errors import ConfigError
from retrieval.serve.access import MIN_TOKEN_LENGTH, OPEN_PATHS, TOKEN_ENV, resolve_token, token_matches

TOKEN = "s3cret-token-0123456789"


def test_resolve_token_from_flag_or_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert resolve_token(None) is None
    assert resolve_token(TOKEN) == TOKEN
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-42")
    assert resolve_token(None) == "from-the-environment-42"
    assert resolve_token(TOKEN) == TOKEN  # the flag wins
    monkeypatch.setenv(TOKEN_ENV, "")
    assert resolve_token(None) is None  # an empty variable is no token


@pytest.mark.parametrize("bad, needle", [("short", "at least"), ("x" * (MIN_TOKEN_LENGTH - 1), "at least"),
                                         ("with a space in it!!", "spaces"), ("ünïcode-token-abcdefgh", "ASCII"),
                                         ("tab\there-0123456789", "ASCII")])
def test_weak_or_unsendable_tokens_are_refused(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve_token(bad)


def test_token_matches_only_the_exact_bearer_value():
    assert token_matches(f"Bearer {TOKEN}".encode(), TOKEN)
    assert token_matches(f"bearer {TOKEN}".encode(), TOKEN)  # the scheme is case-insensitive
    assert token_matches(f"  Bearer   {TOKEN} ".encode(), TOKEN)
    for bad in (None, b"", TOKEN.encode(), f"Basic {TOKEN}".encode(), f"Bearer {TOKEN}x".encode(),
                f"Bearer {TOKEN[:-1]}".encode(), b"Bearer ", f"Bearer {TOKEN.upper()}".encode()):
        assert not token_matches(bad, TOKEN), bad


def test_only_probes_and_the_page_shell_are_open():
    assert {"/healthz", "/readyz", "/", "/app.js", "/style.css"} == set(OPEN_PATHS)
    assert not any(p.startswith("/api") or p == "/metrics" for p in OPEN_PATHS)
