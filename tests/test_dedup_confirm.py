"""retrieval.dedup.confirm: the verifier of near pairs (None until spatial verification is available)."""
from __future__ import annotations

from retrieval.dedup.confirm import near_verifier


def test_near_verifier_is_callable_or_absent():
    v = near_verifier()
    assert v is None or callable(v)
