"""The realtime layer's public face, in the spirit of Socket.IO's server API.

    rt = Realtime(config)
    rt.init_app(app, path="/ws")

    @rt.on_connect
    def connect(conn): rt.join(conn, "lobby")      # raise ProtocolError to refuse

    @rt.on("message")
    def message(conn, event): rt.emit("lobby", {"type": "message", ...})

`emit` works from any code in the app (a WebSocket handler, an HTTP view, a background job):
it serialises the event once and hands it to the backplane, which brings it to every worker's
Hub. The layer knows nothing of chat.

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
compresses that frame for its client alone. When our handler returns,
flask-sock ends the request under gunicorn by raising StopIteration, gunicorn's own signal
to close the connection, which gunicorn 27's async worker catches and logs at debug level.
Tools that wrap Flask.__call__ (error trackers, APM) still see that exception pass
(flask-sock#64): tell them to ignore StopIteration on the WebSocket path.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import gevent
from flask import Flask, Response, g, request
from flask_sock import Sock

from .backplane import Backplane, MemoryBackplane
from .client import Connection
from .config import Config
from .errors import Unavailable, json_error
from .hub import Hub
from .metrics import CLOSES, CONNECTS, REFUSED, SAMPLE_EVERY, Sampler
from .presence import HubPresence, Info, Presence
from .protocol import CloseCode, ErrorCode, ProtocolError, decode, encode, error_event
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

Handler = Callable[[Connection, dict[str, Any]], None]
ConnectHandler = Callable[[Connection], None]
ExpiredHandler = Callable[[str, Info], None]

# A client that earns more than STRIKES error events in STRIKE_WINDOW seconds is closed (1008).
STRIKES = 10
STRIKE_WINDOW = 10.0
ECHO_MAX_BYTES = 16 * 1024 * 1024  # the echo route's message limit (Autobahn's section 9 sends 16 MB)


class _NoThread:
    """Given to simple-websocket as its thread class, so its reader thread never runs."""

    name = "simple_websocket.Base._thread (not started)"

    def __init__(self, target: Callable[[], None]) -> None:
        pass

    def start(self) -> None:
        pass


class Realtime:
    def __init__(self, config: Config, redis_client: Any = None) -> None:
        """One worker's realtime server. With `redis_client` (a redis.Redis), publishes travel
        through Redis to every worker and presence is shared; without, all stays in memory."""
        self.config = config
        self.hub = Hub()
        self.backplane: Backplane
        self.presence: Presence
        if redis_client is None:
            self.backplane = MemoryBackplane(self.hub)
            self.presence = HubPresence(self.hub)
        else:
            from .backplane.redis import RedisBackplane
            from .presence.redis import RedisPresence

            self.backplane = RedisBackplane(redis_client, self.hub, self._backplane_changed)
            self.presence = RedisPresence(
                redis_client, self._presence_expired, config.presence_ttl, self._presence_restored
            )
        self.path = "/ws"
        self._handlers: dict[str, Handler] = {}
        self._connect: ConnectHandler | None = None
        self._disconnect: ConnectHandler | None = None
        self._expired: ExpiredHandler | None = None
        self._restored: ExpiredHandler | None = None
        self._hub_greenlet: gevent.Greenlet | None = None
        self._per_ip: dict[str, int] = {}  # open WebSockets per client address, this worker
        self.started_at: float | None = None  # time.monotonic() when this worker's greenlets started
        self._metrics = Sampler(self.hub)

    # -- the app's API ----------------------------------------------------------------------
    def on(self, event_type: str) -> Callable[[Handler], Handler]:
        """Register the handler of one incoming event type: `handler(conn, event)`."""

        def register(handler: Handler) -> Handler:
            self._handlers[event_type] = handler
            return handler

        return register

    def on_connect(self, handler: ConnectHandler) -> ConnectHandler:
        """`handler(conn)` runs before anything is read from the client. What it sends goes out
        before any room event. Raising ProtocolError refuses the client (error event, 1008)."""
        self._connect = handler
        return handler

    def on_disconnect(self, handler: ConnectHandler) -> ConnectHandler:
        self._disconnect = handler
        return handler

    def on_presence_expired(self, handler: ExpiredHandler) -> ExpiredHandler:
        """`handler(room, info)` runs once for a member that went without a disconnect (its
        worker died), when any worker sweeps it out of the room's presence."""
        self._expired = handler
        return handler

    def on_presence_restored(self, handler: ExpiredHandler) -> ExpiredHandler:
        """`handler(room, info)` runs when a member that was swept out of a room's presence
        (wrongly: a stalled worker, say) is found still there, and put back."""
        self._restored = handler
        return handler

    def emit(self, room: str, event: dict[str, Any], seq: int | None = None) -> None:
        """Send `event` to every client in `room`, on every worker. Does not wait for delivery.

        `seq` numbers the event within the room (a message id from the store): a client told
        `skip_through(n)` does not get events numbered up to n."""
        self.start()
        self.backplane.publish(room, encode(event), seq)

    def emit_local(self, room: str, event: dict[str, Any]) -> None:
        """Send `event` to the clients in `room` on this worker only (say, a figure that each
        worker reads from shared state, like a member count)."""
        self.start()
        self.hub.publish(room, encode(event))

    def join(self, conn: Connection, room: str) -> None:
        """Put `conn` in `room`; every event emitted after this returns reaches it, and it is
        among the room's members (shown as `conn.info`) on every worker."""
        cap = self.config.max_rooms
        if cap and room not in self.hub.rooms and len(self.hub.rooms) >= cap:
            raise ProtocolError(ErrorCode.TOO_MANY_ROOMS, f"this server has {cap} rooms open; join one of them")
        self.hub.join(conn, room)
        self.presence.add(room, conn.id, conn.info)

    def members(self, room: str, limit: int) -> tuple[list[Info], int]:
        """The `info` of up to `limit` members of `room`, on every worker, and how many there are."""
        return self.presence.members(room, limit)

    def shutdown(self) -> None:
        """Send every client `shutting_down` and close 1001, after what is queued for it."""
        self.start()
        self.hub.shutdown()

    @property
    def healthy(self) -> bool:
        hub_alive = self._hub_greenlet is None or not self._hub_greenlet.dead
        return hub_alive and self.backplane.healthy

    def start(self) -> None:
        """Start the Hub and the backplane's and presence's greenlets (once; in the worker)."""
        if self._hub_greenlet is None:
            self.started_at = time.monotonic()
            self._hub_greenlet = gevent.spawn(self.hub.run)
            gevent.spawn(self._ticker)
            gevent.spawn(self._sampler)
            self.backplane.start()
            self.presence.start()

    def _ticker(self) -> None:
        """The ticker greenlet: every PING_INTERVAL, every writer pings its peer."""
        while True:
            gevent.sleep(self.config.ping_interval)
            self.hub.ping_all()

    def _sampler(self) -> None:
        """The sampler greenlet: every SAMPLE_EVERY, this worker's figures into the metrics."""
        while True:
            self.sample_metrics()
            gevent.sleep(SAMPLE_EVERY)

    def sample_metrics(self) -> None:
        """This worker's figures into the metrics now (the sampler's round; and at worker exit,
        so that its last second is counted)."""
        try:
            self._metrics.sample(self.backplane.healthy)
        except Exception:  # the figures may be off for a while; delivery goes on
            log.exception("sampling the metrics failed")

    def _backplane_changed(self, healthy: bool, recovered: bool) -> None:
        if not healthy:
            detail = "delivery is degraded: events may not reach everyone until the server reconnects"
            self.hub.tell_all(encode(error_event(ErrorCode.DEGRADED, detail)))
        elif recovered:  # what was published meanwhile is in the store: resume with since
            self.hub.close_all(CloseCode.SERVICE_RESTART, ErrorCode.RESYNC, "delivery is back: reconnect to catch up")

    def _presence_expired(self, room: str, info: Info) -> None:
        if self._expired is not None:
            self._expired(room, info)

    def _presence_restored(self, room: str, info: Info) -> None:
        if self._restored is not None:
            self._restored(room, info)

    # -- wiring into Flask --------------------------------------------------------------------
    def init_app(self, app: Flask, path: str = "/ws") -> None:
        self.path = path
        app.extensions["realtime"] = self
        app.config["SOCK_SERVER_OPTIONS"] = {"thread_class": _NoThread}
        app.before_request(self._check_handshake)
        app.teardown_request(self._release_ip)
        sock = Sock(app)
        sock.route(path)(self._serve)
        if self.config.chat_echo_route:
            sock.route(path + "/echo")(self._serve_echo)

    def _check_handshake(self) -> Response | None:
        """Refuse a bad handshake with an HTTP error before anything is upgraded."""
        if request.path != self.path and not (self.config.chat_echo_route and request.path == self.path + "/echo"):
            return None
        headers = request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            return _refuse(400, "not_websocket", "this endpoint speaks WebSocket only")
        if headers.get("Sec-WebSocket-Version") != "13":
            response = _refuse(400, "bad_version", "Sec-WebSocket-Version must be 13")
            response.headers["Sec-WebSocket-Version"] = "13"
            return response
        try:
            key_ok = len(base64.b64decode(headers.get("Sec-WebSocket-Key", ""), validate=True)) == 16
        except binascii.Error:
            key_ok = False
        if not key_ok:
            return _refuse(400, "bad_key", "Sec-WebSocket-Key must be 16 bytes in base64")
        origin = headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            return _refuse(403, "bad_origin", f"origin {origin} may not open this socket")
        address, cap = request.remote_addr or "", self.config.max_connections_per_ip
        if cap and self._per_ip.get(address, 0) >= cap:
            response = _refuse(429, "too_many_connections", f"at most {cap} connections from one address")
            response.headers["Retry-After"] = "10"
            return response
        self._per_ip[address] = self._per_ip.get(address, 0) + 1  # until this request ends
        g.realtime_address = address
        offer = request.environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")
        # Off, or a chat client that asks for a smaller window than the 32 KB our shared frames
        # use (server_max_window_bits): no permessage-deflate for it. The echo route compresses
        # only for clients that left us the full window (Connection._deflate), so any offer suits it.
        small_window = "server_max_window_bits" in offer and request.path == self.path
        if not self.config.ws_deflate or small_window:
            request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return None

    def _release_ip(self, _exc: BaseException | None) -> None:
        """End of a request: a WebSocket counted against its address no longer is."""
        address = g.pop("realtime_address", None)
        if address is not None:
            left = self._per_ip.pop(address) - 1
            if left:
                self._per_ip[address] = left

    def _origin_allowed(self, origin: str) -> bool:
        origin = origin.lower().rstrip("/")
        if origin in self.config.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == request.host.lower()

    # -- one connection, in its request greenlet ------------------------------------------------
    def _serve(self, ws: Any) -> None:
        """flask-sock's handler: `ws` is simple-websocket's Server, after the handshake."""
        self.start()
        conn = _take_over(ws, self.config, request.args.to_dict(), self.hub)
        strikes = RateLimiter(STRIKES, STRIKE_WINDOW)
        self.hub.register(conn)
        connected = False
        try:
            try:
                if self._connect is not None:
                    self._connect(conn)
                connected = True
            except ProtocolError as exc:
                conn.close(CloseCode.POLICY, exc.code, exc.detail)
            except Unavailable as exc:
                log.warning("%r refused: %s (%r)", conn, exc, exc.__cause__)
                conn.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.UNAVAILABLE, str(exc))
            finally:
                conn.start_writer()
            conn.read_pump(lambda conn, message: self._dispatch(conn, message, strikes))
        except Exception:
            log.exception("%r: handler failed", conn)
            conn.close(CloseCode.INTERNAL, ErrorCode.INTERNAL, "internal error")
        finally:
            self.hub.unregister(conn)
            try:
                self.presence.remove_all(conn.id)
            except Unavailable:
                log.warning("%r: presence not removed; it expires by itself", conn)
            if connected and self._disconnect is not None:
                try:
                    self._disconnect(conn)
                except Exception:
                    log.exception("%r: disconnect handler failed", conn)
            _end(conn)

    def _serve_echo(self, ws: Any) -> None:
        """/ws/echo (CHAT_ECHO_ROUTE=1): every message back as it came, through the same
        reader, queue and writer as chat clients; messages up to ECHO_MAX_BYTES."""
        self.start()
        conn = _take_over(ws, replace(self.config, max_frame_bytes=ECHO_MAX_BYTES), {}, self.hub)
        self.hub.register(conn)  # in no room, but pinged and closed at shutdown like the others
        try:
            conn.start_writer()
            conn.read_pump(lambda conn, message: conn.echo(message))
        finally:
            self.hub.unregister(conn)
            _end(conn)

    def _dispatch(self, conn: Connection, message: str | bytes, strikes: RateLimiter) -> None:
        """Hand one client frame to its handler. An error goes to this client only, with the
        event's `cid` when it had one, so the client knows which of its events failed."""
        cid = None
        try:
            if not isinstance(message, str):
                raise ProtocolError(ErrorCode.BAD_TYPE, "binary frames are not accepted; send JSON text")
            event = decode(message)
            cid = event.get("cid") if isinstance(event.get("cid"), str) else None
            handler = self._handlers.get(event["type"])
            if handler is None:
                raise ProtocolError(ErrorCode.BAD_TYPE, f"unknown event type {event['type']!r}"[:200])
            handler(conn, event)
        except Unavailable as exc:  # not the client's fault: no strike
            conn.send(error_event(ErrorCode.UNAVAILABLE, str(exc), cid))
        except ProtocolError as exc:
            conn.send(exc.event(cid))
            if not strikes.allow():
                conn.close(CloseCode.POLICY, ErrorCode.FLOOD, "too many bad or rejected frames")


def _take_over(ws: Any, config: Config, args: dict[str, str], hub: Hub) -> Connection:
    """Our Connection on simple-websocket's socket, after its handshake: the frame-level wsproto
    connection, without the HTTP handshake state around it, which would stay alive as long as
    the request (`ws` is held by flask-sock's frame)."""
    frames, ws.ws = ws.ws.connection, None
    ws.connected = False  # flask-sock's close() after we return must not write: ours did
    conn = Connection(ws.sock, frames, config, args, request.remote_addr or "", hub.stats)
    CONNECTS.inc()
    log.info(
        "connect %s from %s path=%s",
        conn.id,
        conn.remote_addr,
        request.path,
        extra={"event": "connect", "conn": conn.id, "addr": conn.remote_addr, "path": request.path},
    )
    return conn


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
    log.info(
        "close %s code=%s by %s reason=%r",
        conn.id,
        code,
        by,
        reason,
        extra={"event": "close", "conn": conn.id, "addr": conn.remote_addr, "code": code, "by": by, "reason": reason},
    )


def _refuse(status: int, error: str, detail: str) -> Response:
    """An upgrade request refused before the handshake: counted, logged, answered in JSON. A
    bad origin is logged as a warning (a misconfiguration, or a page of another site trying);
    the rest at debug, since a client retrying could fill the log (the counter has them)."""
    REFUSED.labels(error).inc()
    log.log(
        logging.WARNING if status == 403 else logging.DEBUG,
        "refused %s from %s: %d %s (%r)",
        request.path,
        request.remote_addr,
        status,
        error,
        detail,
        extra={"event": "refused", "addr": request.remote_addr, "status": status, "error": error},
    )
    return json_error(status, error, detail)
