"""The names this server answers to: a request whose Host is not one of them gets 400 before
anything else runs (DNS rebinding: a page of evil.example whose name the attacker points at
127.0.0.1 would otherwise be the server's own origin, to its own Origin check)."""

from __future__ import annotations

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


def init_app(app: Flask, names: tuple[str, ...]) -> None:
    """Refuse requests for any other name than `names` (ALLOWED_HOSTS) with 400 in JSON."""
    if not names:
        return

    @app.before_request
    def check_host() -> Response | None:
        if allowed(request.host, names):
            return None
        return json_error(400, "bad_host", "this server does not answer to that name (see ALLOWED_HOSTS)")
