"""retrieval.serve.server: only a loopback address is served without a warning."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from retrieval.serve.server import exposure_warning, is_loopback  # noqa: E402


def test_only_loopback_is_quiet():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host) and exposure_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert not is_loopback(host) and "warning" in exposure_warning(host)


def test_the_warning_says_what_the_token_does_not_cover():
    assert exposure_warning("127.0.0.1", "t" * 20) is None
    no_token = exposure_warning("0.0.0.0")
    assert "without a token" in no_token and "--token" in no_token
    with_token = exposure_warning("0.0.0.0", "t" * 20)
    assert "without a token" not in with_token and "TLS" in with_token


def test_the_listening_socket_sends_at_once():
    import socket

    from retrieval.serve.server import bind
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
    finally:
        sock.close()
