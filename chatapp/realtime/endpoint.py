"""The layer's Flask side: a blueprint with the WebSocket route (and its /echo), the
before-upgrade hooks (handshake.py) run ahead of the handshake, and the socket taken over from
simple-websocket once the handshake is answered.

How flask-sock and simple-websocket are used (versions pinned in requirements.txt):
flask-sock routes the upgrade request and simple-websocket's Server answers the handshake
(101) with wsproto (its bare `sock.send` is safe there: some 130 bytes into a new socket's
empty buffer). Everything after the handshake is ours, because simple-websocket's
background thread would read the socket and write pongs and close frames beside our writer
with a bare `sock.send`, which can write part of a frame (simple-websocket#45). So its thread
is never started (`_NoThread`), and our reader and writer (client.py) take over the socket
and wsproto connection. permessage-deflate is off unless WS_DEFLATE=1: the client's offer is
removed before the handshake. With it on, simple-websocket accepts the offer (wsproto then
inflates what the client sends) and our writer sends each room's frame compressed once, on
its own (framing.message_frame); only a writer that joins several batches into one frame
compresses that frame for its client alone.

The request ends as soon as the handshake is answered; the connection lives on in a greenlet
of its own (Sessions.start). Who owns what, from then on:
- the socket: the session. Ours is a new socket object on the same descriptor; gunicorn's is
  detached from it, so that gunicorn, closing its own as the request ends, leaves the
  connection open. The session closes ours when it is over.
- the Upgrade: the session, which ends it (its `at_end` callbacks: the per-address count)
  when the connection is over; the request's teardown no longer does. Its headers and
  cookies are dropped first (Upgrade.forget_request).
- the request (the WSGI environ, gunicorn's request and parser, Flask's contexts,
  simple-websocket's Server): nobody; it is freed with its greenlet.
An idle connection so holds only its session's greenlet, shallow (the request's greenlet sat
under gunicorn's, Flask's and flask-sock's frames, and gevent keeps a copy of a switched-out
greenlet's C stack), and what the session needs: docs/performance.md, "Memory per idle
connection". gunicorn no longer counts WebSockets as requests in flight (its
worker_connections; graceful shutdown waits for them in gunicorn.conf.py's worker_exit).

When our handler returns, flask-sock ends the request under gunicorn by raising
StopIteration, gunicorn's own signal to close the connection, which gunicorn 27's async
worker catches and logs at debug level. Tools that wrap Flask.__call__ (error trackers, APM)
still see that exception pass (flask-sock#64): tell them to ignore StopIteration on the
WebSocket path.

flask-sock's routes match WebSocket requests only; a plain HTTP request to the same path
matches a route of ours beside it, so that the hooks answer it too (400 `not_websocket`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask_sock import Sock
from werkzeug.routing import WebsocketMismatch
from wsproto.connection import Connection as WSConnection

from ..config import Config
from .handshake import Hook, Refused, Upgrade, deflate_offers
from .metrics import REFUSED
from .session import Sessions

log = logging.getLogger(__name__)

# Methods of a plain HTTP request that the hooks answer (400 not_websocket) rather than a 405.
HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class _NoThread:
    """Given to simple-websocket as its thread class, so its reader thread never runs."""

    name = "simple_websocket.Base._thread (not started)"

    def __init__(self, target: Callable[[], None]) -> None:
        pass

    def start(self) -> None:
        pass


class _NoEvent:
    """Given to simple-websocket as its event class: its event tells its `receive` what its
    thread read, and neither runs here (a threading.Event, under gevent, is 1% of a connect)."""

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


# The request headers simple-websocket's handshake reads: it rebuilds the request from the WSGI
# environ's headers, and h11 parses it again. The rest (a browser sends a dozen: User-Agent,
# Cookie, Accept-*, Cache-Control...) are dropped once the hooks have seen them, a third of
# that second parse.
HANDSHAKE_HEADERS = frozenset(
    {
        "HTTP_HOST",
        "HTTP_UPGRADE",
        "HTTP_CONNECTION",
        "HTTP_SEC_WEBSOCKET_KEY",
        "HTTP_SEC_WEBSOCKET_VERSION",
        "HTTP_SEC_WEBSOCKET_EXTENSIONS",
        "HTTP_SEC_WEBSOCKET_PROTOCOL",
    }
)


def blueprint(path: str, config: Config, hooks: list[Hook], sessions: Sessions) -> Blueprint:
    """The WebSocket endpoint at `path` (and `path`/text for plain-text clients when the app
    serves them, `path`/echo with CHAT_ECHO_ROUTE=1): `hooks` run
    in order before each upgrade; `sessions` serves each connection after it."""
    bp = Blueprint("realtime", __name__)
    sock = Sock()

    @bp.record_once
    def configure(state: Any) -> None:
        state.app.config["SOCK_SERVER_OPTIONS"] = {"thread_class": _NoThread, "event_class": _NoEvent}

    @bp.before_request
    def before_upgrade() -> Response | None:
        """Run the hooks; refuse with an HTTP error, before anything is upgraded, or let the
        handshake go on."""
        upgrade = g.realtime_upgrade = Upgrade(
            path=request.path,
            headers=request.headers,
            cookies=request.cookies,
            address=request.remote_addr or "",
            host=request.host.lower(),
            scheme=request.scheme,
        )
        try:
            for hook in hooks:
                hook(upgrade)
        except Refused as refused:
            return _refuse(refused)
        offer = deflate_offers(request.environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", ""))
        # Off, or a chat client that asks for a smaller window than the 32 KB our shared frames
        # use (server_max_window_bits): no permessage-deflate for it. The echo route compresses
        # only for clients that left us the full window (Connection._deflate), so any offer suits it.
        small_window = "server_max_window_bits" in offer and request.path == path
        environ = request.environ
        if not config.ws_deflate or small_window or not offer:
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        else:
            environ["HTTP_SEC_WEBSOCKET_EXTENSIONS"] = offer  # the well-formed offers only
        # Routed to flask-sock, so to be upgraded (a request that is not keeps its headers for
        # gunicorn's access log: an upgrade request without `Connection: Upgrade` gets a 400).
        if request.url_rule is not None and request.url_rule.websocket:
            for name in [name for name in environ if name.startswith("HTTP_") and name not in HANDSHAKE_HEADERS]:
                del environ[name]
        return None

    @bp.teardown_request
    def after_request(_exc: BaseException | None) -> None:
        """A request refused, or whose handshake failed, ends its Upgrade; one upgraded has
        handed it to its session (_hand_over), which ends it when the connection is over."""
        upgrade = g.pop("realtime_upgrade", None)
        if upgrade is not None:
            upgrade.end()

    def serve(ws: Any) -> None:
        """flask-sock's handler: `ws` is simple-websocket's Server, after the handshake. Hands
        the connection to a session greenlet and returns: the request is over."""
        sessions.start(*_take_over(ws), _hand_over(), request.args.to_dict())

    def serve_echo(ws: Any) -> None:
        sessions.start_echo(*_take_over(ws), _hand_over())

    def serve_text(ws: Any) -> None:
        """The plain-text endpoint: the same as `serve`, in lines of text (Realtime.serve_text)."""
        sessions.start(*_take_over(ws), _hand_over(), request.args.to_dict(), text=True)

    _route(bp, sock, path, serve)
    if sessions.serves_text:
        _route(bp, sock, path + "/text", serve_text)
    if config.chat_echo_route:
        _route(bp, sock, path + "/echo", serve_echo)
    return bp


def _route(bp: Blueprint, sock: Sock, path: str, handler: Callable[[Any], None]) -> None:
    """`handler` serves WebSocket requests to `path`; a plain HTTP request there is answered by
    the hooks (or, should they let it through, as werkzeug answers a WebSocket route: 400)."""
    sock.route(path, bp=bp)(handler)

    def not_websocket() -> Response:
        raise WebsocketMismatch()

    bp.add_url_rule(path, f"{handler.__name__}_http", not_websocket, methods=HTTP_METHODS)


def _take_over(ws: Any) -> tuple[socket.socket, WSConnection]:
    """The socket and the frame-level wsproto connection of simple-websocket's Server, after
    its handshake, for the session to own: the socket as a new object on the same descriptor
    (gunicorn's is detached: its close as the request ends leaves the connection open), the
    wsproto connection without the HTTP handshake state around it."""
    frames, ws.ws = ws.ws.connection, None
    ws.connected = False  # flask-sock's close() after we return must not write: ours did
    theirs, ws.sock = ws.sock, None
    # flask-sock's response for this request is of a class made for it, which refers to `ws`:
    # a cycle, freed only by the garbage collector. Without the environ, `ws` holds nothing of
    # the request, which refcounting frees as the request ends (not 27 objects more per
    # connect for the collector, in a storm of connects).
    ws.environ = None
    ours = type(theirs)(theirs.family, theirs.type, theirs.proto, fileno=theirs.detach())
    return ours, frames


def _hand_over() -> Upgrade:
    """This request's Upgrade, for its session to own and end (the teardown leaves it), without
    the request's headers and cookies (they hold the WSGI environ)."""
    upgrade: Upgrade = g.pop("realtime_upgrade")
    upgrade.forget_request()
    return upgrade


def _refuse(refused: Refused) -> Response:
    """An upgrade request refused before the handshake: counted, logged, answered in JSON. A
    bad origin is logged as a warning (a misconfiguration, or a page of another site trying);
    the rest at debug, since a client retrying could fill the log (the counter has them)."""
    REFUSED.labels(refused.error).inc()
    log.log(
        logging.WARNING if refused.status == 403 else logging.DEBUG,
        "refused %s from %s: %d %s (%r)",
        request.path,
        request.remote_addr,
        refused.status,
        refused.error,
        refused.detail,
        extra={"event": "refused", "addr": request.remote_addr, "status": refused.status, "error": refused.error},
    )
    response = jsonify(error=refused.error, detail=refused.detail)
    response.status_code = refused.status
    response.headers.update(refused.headers)
    return response
