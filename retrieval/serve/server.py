"""Run the search server: what ``gemseg serve`` (``tools/serve.py``) calls.

:func:`serve` loads the index and its model, binds the socket (so the port is known and taken
before it says where it serves), calls ``on_ready(url, info)`` and serves with uvicorn until stopped.
"""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import uvicorn

from retrieval.core.errors import ResourceError
from retrieval.serve.access import resolve_token
from retrieval.serve.app import create_app

PathLike = Union[str, Path]
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True when ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: Optional[str] = None) -> Optional[str]:
    """A warning line when ``host`` makes the server reachable from other machines, else None:
    without a token anyone there can search and read the images; with one, the token and the
    images still cross the network in the clear unless TLS is put in front."""
    if is_loopback(host):
        return None
    if token is None:
        return (f"warning: listening on {host} without a token: every machine that can reach this one can search "
                "the index and view its images; set --token (or GEMSEG_TOKEN), or keep the default 127.0.0.1")
    return (f"warning: listening on {host}: the token and the images cross the network unencrypted; "
            "put TLS in front (a reverse proxy) unless the network is trusted")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), ``TCP_NODELAY`` set.

    Raises:
        ResourceError: the address cannot be bound (port in use, unknown host).
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # answers go out at once: without it a response written in two parts (head, body) waits for
        # the client's delayed ACK (Nagle), ~40 ms per request; accepted sockets inherit the option
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(256)
    except OSError as e:
        raise ResourceError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(index: PathLike, host: str = "127.0.0.1", port: int = 8000, *, model: Optional[PathLike] = None,
          concepts: Optional[PathLike] = None, max_upload_mb: float = 20.0, forward_workers: int = 1,
          device: Optional[str] = None, token: Optional[str] = None, reload_interval: float = 1.0,
          on_ready: Optional[Callable[[str, Dict[str, Any]], None]] = None,
          warn: Optional[Callable[[str], None]] = None) -> None:
    """Serve the index folder ``index`` on ``host:port`` until interrupted.

    ``token`` (default ``$GEMSEG_TOKEN``): the bearer token data requests need
    (:mod:`retrieval.serve.access`). ``reload_interval``: seconds between looks at the index
    folder for a new commit (0: never). ``warn(line)`` is told first when ``host`` exposes the
    server to other machines (:func:`exposure_warning`), and later when a changed index folder
    could not be opened. The model and the index are loaded; then the socket is bound and
    ``on_ready(url, info)`` is called (``info``: ``/api/info``'s document), then requests are answered.
    """
    token = resolve_token(token)
    warning = exposure_warning(host, token)
    if warning and warn is not None:
        warn(warning)
    app = create_app(index, model, concepts, max_upload_mb, forward_workers=forward_workers, device=device,
                     token=token, reload_interval=reload_interval)
    if warn is not None:
        app.state.service.on_reload = lambda ok, line: None if ok else warn(f"warning: {line}")
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    if on_ready is not None:
        on_ready(url, app.state.service.info())
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])
