"""The chat with its upgrade answered ahead of Flask, for a decision that is not ours: what
answering the WebSocket handshake outside Flask and flask-sock's route would buy a connect
(docs/performance.md, "Connect"). Measurement only; the server runs wsgi.py.

    bench/run.py storm --n 1000 --servers plain,chat,chat+ahead

A WSGI middleware in front of the chat's Flask app takes a request to /ws that asks for an
upgrade: the Host check and the layer's hooks as the chat runs them, the 101 written at once
(RFC 6455's accept key, no second parse of the request), and the socket handed to the same
session as flask-sock's route hands it. Anything else (a refusal, every other path) goes to
Flask. It reaches into the layer (its hooks and sessions), which only a real change would
make an API of.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.datastructures import EnvironHeaders
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType

from chatapp import create_app
from chatapp.hosts import allowed
from chatapp.realtime.handshake import Refused, Upgrade

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 1.3

app = create_app()
_realtime = app.extensions["realtime"]
_config = app.extensions["config"]
_flask = app.wsgi_app


def _ahead(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    host = environ.get("HTTP_HOST", "").lower()
    if (
        environ.get("PATH_INFO") != "/ws"
        or environ.get("HTTP_UPGRADE", "").lower() != "websocket"
        or not (allowed(host, _config.allowed_hosts) and allowed(host, _config.loopback_hosts))
    ):
        return _flask(environ, start_response)
    upgrade = Upgrade(
        path="/ws",
        headers=EnvironHeaders(environ),
        cookies={},
        address=environ.get("REMOTE_ADDR", ""),
        host=host,
        scheme=environ["wsgi.url_scheme"],
    )
    try:
        for hook in _realtime._hooks:
            hook(upgrade)
    except Refused:
        upgrade.end()
        return _flask(environ, start_response)  # Flask's route refuses it again, and answers
    accept = base64.b64encode(hashlib.sha1(environ["HTTP_SEC_WEBSOCKET_KEY"].encode() + GUID).digest())
    sock = environ["gunicorn.socket"]
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    ours = type(sock)(sock.family, sock.type, sock.proto, fileno=sock.detach())
    upgrade.forget_request()
    args = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    _realtime._sessions.start(ours, WSConnection(ConnectionType.SERVER), upgrade, args)
    raise StopIteration  # gunicorn's word for a request that is over, its socket not its own


app.wsgi_app = _ahead  # type: ignore[method-assign]
