"""The names this server answers to: a request whose Host is not one of them gets 400 before
anything else runs (DNS rebinding: a page of evil.example whose name the attacker points at
127.0.0.1 would otherwise be the server's own origin, to its own Origin check)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from flask import Flask, Response, request

from .errors import json_error


def allowed(host: str, names: tuple[str, ...]) -> bool:
    """Whether `host` (a Host header: a name or address, maybe a port) is one of `names` (a
    leading dot: that domain and its subdomains); every host when `names` is empty."""
    if not names:
        return True
    try:
        name = urlsplit("//" + host).hostname or ""
    except ValueError:  # a port that is not a number, an unclosed bracket
        return False
    return any(name == n or (n.startswith(".") and (name == n[1:] or name.endswith(n))) for n in names)


def init_app(app: Flask, names: tuple[str, ...], on_loopback: tuple[str, ...] = ()) -> None:
    """Refuse requests for any other name than `names` (ALLOWED_HOSTS), and those that came in
    on a loopback address for any other than `on_loopback`, with 400 in JSON."""
    if not names and not on_loopback:
        return

    @app.before_request
    def check_host() -> Response | None:
        if allowed(request.host, names) and (not on_loopback or allowed(request.host, on_loopback) or not _local()):
            return None
        return json_error(400, "bad_host", "this server does not answer to that name (see ALLOWED_HOSTS)")


def _local() -> bool:
    """Whether this request came in on a loopback address (gunicorn's socket says where)."""
    sock = request.environ.get("gunicorn.socket")
    try:
        return sock is not None and ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    except (OSError, ValueError, IndexError, TypeError):  # a Unix socket, a closed one
        return False
