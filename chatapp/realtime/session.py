"""One connection's life, in a greenlet of its own started once its handshake is answered
(Sessions.start; the upgrade request is over by then: endpoint.py), which is its reader
(client.py): registered with the Hub, the app's connect handler, then each message handed to
the handler of its type until the connection is over, then the disconnect handler; its start
and end counted and logged; then its socket closed.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import gevent
from gevent.event import Event
from wsproto.connection import Connection as WSConnection

from ..config import Config
from ..ratelimit import RateLimiter
from ..unavailable import Unavailable
from .client import Connection
from .handshake import Upgrade
from .hub import Hub
from .inflate import bound_inflate
from .metrics import CLOSES, CONNECTS
from .presence import Presence
from .protocol import CloseCode, ErrorCode, ProtocolError, decode, error_event

log = logging.getLogger(__name__)

Handler = Callable[[Connection, dict[str, Any]], None]
ConnectHandler = Callable[[Connection], None]

# A client that earns more than STRIKES error events in STRIKE_WINDOW seconds is closed (1008).
STRIKES = 10
STRIKE_WINDOW = 10.0
ECHO_MAX_BYTES = 16 * 1024 * 1024  # the echo route's message limit (Autobahn's section 9 sends 16 MB)


@dataclass(eq=False)
class Handlers:
    """The app's handlers (Realtime.on, on_connect, on_disconnect): registered while the app is
    set up, read by every session."""

    events: dict[str, Handler] = field(default_factory=dict)  # by event type
    connect: ConnectHandler | None = None
    disconnect: ConnectHandler | None = None
    text: TextCodec | None = None  # the plain-text endpoint's (Realtime.serve_text), if any


@dataclass(frozen=True)
class TextCodec:
    """How a plain-text client talks (a terminal, the seed's page): each text frame it sends is
    made an event by `parse`; each event it is sent becomes a line by `render` (None: not shown)."""

    parse: Callable[[str], dict[str, Any]]
    render: Callable[[dict[str, Any]], str | None]


class Sessions:
    """Serves each connection of this worker, given its socket after the handshake."""

    def __init__(
        self, config: Config, hub: Hub, presence: Presence, handlers: Handlers, start: Callable[[], None]
    ) -> None:
        """`start`: starts the worker's greenlets, if they are not running (lifecycle.py)."""
        self._config = config
        self._hub = hub
        self._presence = presence
        self._handlers = handlers
        self._start = start
        # Sessions started and not yet over, and whether there are none. Changed only in
        # `_spawn` (the request's greenlet) and at the end of `_session` (the session's).
        self.running = 0
        self._none_running = Event()
        self._none_running.set()

    @property
    def serves_text(self) -> bool:
        """Whether the app has a plain-text codec (Realtime.serve_text)."""
        return self._handlers.text is not None

    def start(
        self, sock: socket.socket, frames: WSConnection, upgrade: Upgrade, args: dict[str, str], text: bool = False
    ) -> gevent.Greenlet:
        """`serve` the client in a greenlet of its own, from now on the owner of `sock` and
        `upgrade`: it closes the one and ends the other when the client is gone. Returns at once."""
        return self._spawn(sock, frames, upgrade, args, text)

    def start_echo(self, sock: socket.socket, frames: WSConnection, upgrade: Upgrade) -> gevent.Greenlet:
        """`serve_echo` the client in a greenlet of its own, as `start` does."""
        return self._spawn(sock, frames, upgrade, None, False)

    def drain(self, timeout: float) -> bool:
        """Wait until every session of this worker is over, `timeout` seconds at most; whether
        they all are."""
        return self._none_running.wait(timeout)

    def _spawn(
        self, sock: socket.socket, frames: WSConnection, upgrade: Upgrade, args: dict[str, str] | None, text: bool
    ) -> gevent.Greenlet:
        self.running += 1
        self._none_running.clear()
        return gevent.spawn(self._session, sock, frames, upgrade, args, text)

    def _session(
        self, sock: socket.socket, frames: WSConnection, upgrade: Upgrade, args: dict[str, str] | None, text: bool
    ) -> None:
        """A session greenlet (`args` None: the echo route's). The client is served near the
        top of its stack, so that the C stack gevent saves while its reader waits stays small:
        plain calls only, which Python 3.11 makes without a C frame of its own (a call through
        C, `f(*args)` or a partial, costs some 800 bytes more per idle client)."""
        try:
            if args is None:
                self.serve_echo(sock, frames, upgrade)
            else:
                self.serve(sock, frames, upgrade, args, text)
        except Exception:  # serve handles the app's errors; this is the layer's own
            log.exception("session failed")
        finally:
            upgrade.end()
            sock.close()
            self.running -= 1
            if not self.running:
                self._none_running.set()

    def serve(
        self, sock: socket.socket, frames: WSConnection, upgrade: Upgrade, args: dict[str, str], text: bool = False
    ) -> None:
        """A client's whole life, from its socket and wsproto connection after the handshake:
        returns when it is over. `args` are the handshake's query parameters; `upgrade.data`,
        what the before-upgrade hooks learnt, becomes `conn.data`. `text`: a plain-text client
        (the app's TextCodec turns its lines into events and events into lines)."""
        self._start()
        conn = self._open(sock, frames, self._config, args, upgrade)
        codec = self._handlers.text if text else None
        if codec is not None:
            conn.lines = lambda event: codec.render(json.loads(event))
        conn.data.update(upgrade.data)
        strikes = RateLimiter(STRIKES, STRIKE_WINDOW)
        self._hub.register(conn)
        connected = False
        try:
            try:
                if self._handlers.connect is not None:
                    self._handlers.connect(conn)
                connected = True
            except ProtocolError as exc:
                conn.close(CloseCode.POLICY, exc.code, exc.detail)
            except Unavailable as exc:
                log.warning("%r refused: %s (%r)", conn, exc, exc.__cause__)
                conn.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.UNAVAILABLE, str(exc))
            finally:
                conn.start_writer()
            conn.read_pump(lambda conn, message: self._dispatch(conn, message, strikes, codec))
        except Exception:
            log.exception("%r: handler failed", conn)
            conn.close(CloseCode.INTERNAL, ErrorCode.INTERNAL, "internal error")
        finally:
            self._hub.unregister(conn)
            try:
                self._presence.remove_all(conn.id)
            except Unavailable:
                log.warning("%r: presence not removed; it expires by itself", conn)
            if connected and self._handlers.disconnect is not None:
                try:
                    self._handlers.disconnect(conn)
                except Exception:
                    log.exception("%r: disconnect handler failed", conn)
            _end(conn)

    def serve_echo(self, sock: socket.socket, frames: WSConnection, upgrade: Upgrade) -> None:
        """/ws/echo (CHAT_ECHO_ROUTE=1): every message back as it came, through the same
        reader, queue and writer as chat clients; messages up to ECHO_MAX_BYTES."""
        self._start()
        conn = self._open(sock, frames, replace(self._config, max_frame_bytes=ECHO_MAX_BYTES), {}, upgrade)
        self._hub.register(conn)  # in no room, but pinged and closed at shutdown like the others
        try:
            conn.start_writer()
            conn.read_pump(lambda conn, message: conn.echo(message))
        finally:
            self._hub.unregister(conn)
            _end(conn)

    def _open(
        self, sock: socket.socket, frames: WSConnection, config: Config, args: dict[str, str], upgrade: Upgrade
    ) -> Connection:
        bound_inflate(frames, config.max_frame_bytes)  # a compressed message inflates no further than its limit
        conn = Connection(sock, frames, config, args, upgrade.address, self._hub.stats)
        CONNECTS.inc()
        log.debug(  # DEBUG: at INFO a reconnect storm's lines cost as much as its handshakes' parsing
            "connect %s from %s path=%s",
            conn.id,
            conn.remote_addr,
            upgrade.path,
            extra={"event": "connect", "conn": conn.id, "addr": conn.remote_addr, "path": upgrade.path},
        )
        return conn

    def _dispatch(
        self, conn: Connection, message: str | bytes, strikes: RateLimiter, codec: TextCodec | None = None
    ) -> None:
        """Hand one client frame to its handler. An error goes to this client only, with the
        event's `cid` when it had one, so the client knows which of its events failed."""
        cid = None
        try:
            if not isinstance(message, str):
                raise ProtocolError(ErrorCode.BAD_TYPE, "binary frames are not accepted; send text")
            event = decode(message) if codec is None else codec.parse(message)
            cid = event.get("cid") if isinstance(event.get("cid"), str) else None
            handler = self._handlers.events.get(event["type"])
            if handler is None:
                raise ProtocolError(ErrorCode.BAD_TYPE, f"unknown event type {event['type']!r}"[:200])
            handler(conn, event)
        except Unavailable as exc:  # not the client's fault: no strike
            conn.send(error_event(ErrorCode.UNAVAILABLE, str(exc), cid))
        except ProtocolError as exc:
            conn.send(exc.event(cid))
            if not strikes.allow():
                conn.close(CloseCode.POLICY, ErrorCode.FLOOD, "too many bad or rejected frames")


def _end(conn: Connection) -> None:
    """After the reader has returned: the writer finishes, the close is counted and logged.
    A close the peer started is logged with its code and by="peer", not its reason (the
    peer's own text); its code is a metric label only if it is one of RFC 6455's (1000-1015),
    else "other", so that clients cannot make labels without end."""
    conn.end()
    code, reason = conn.close_reason or (CloseCode.NORMAL, "")
    code = int(code)
    CLOSES.labels(str(code) if 1000 <= code <= 1015 else "other").inc()
    by, reason = ("peer", "") if conn.closed_by_peer else ("server", reason)
    log.debug(
        "close %s code=%s by %s reason=%r",
        conn.id,
        code,
        by,
        reason,
        extra={"event": "close", "conn": conn.id, "addr": conn.remote_addr, "code": code, "by": by, "reason": reason},
    )
