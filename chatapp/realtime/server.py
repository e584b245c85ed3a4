"""Realtime: the layer's API, the one object an app holds, in the spirit of Socket.IO's server.

    rt = Realtime(config)
    rt.init_app(app, path="/ws")

    @rt.before_upgrade
    def auth(upgrade): ...                          # raise Refused(401, ...) to refuse

    @rt.on_connect
    def connect(conn): rt.join(conn, "lobby")      # raise ProtocolError to refuse

    @rt.on("message")
    def message(conn, event): rt.emit("lobby", {"type": "message", ...})

`emit` works from any code in the app (a WebSocket handler, an HTTP view, a background job):
it serialises the event once and hands it to the backplane, which brings it to every worker's
Hub. The layer knows nothing of chat. Behind this API, and private to the layer: the Hub
(hub.py), the backplane (backplane/), presence (presence/), the worker's greenlets
(lifecycle.py), each connection's session (session.py) and the Flask endpoint (endpoint.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask

from ..config import Config
from . import endpoint
from .backplane import Backplane, MemoryBackplane
from .client import Connection
from .handshake import Hook, PerAddressCap, PerAddressRate, WorkerCap, check_handshake, check_origin
from .hub import Hub
from .lifecycle import Lifecycle
from .presence import BEATS, HubPresence, Info, Presence
from .protocol import CloseCode, ErrorCode, ProtocolError, encode, error_event
from .session import ConnectHandler, Handler, Handlers, Sessions, TextCodec

PresenceHandler = Callable[[str, Info, int], None]
CountsHandler = Callable[[dict[str, int]], None]
CONNECT_WINDOW = 10.0  # CONNECT_RATE_LIMIT counts upgrades per this many seconds


@dataclass(frozen=True, slots=True)
class Health:
    """How this worker's realtime layer is doing (Realtime.health)."""

    healthy: bool  # the Hub runs and the backplane is connected
    connections: int  # open on this worker
    rooms: int  # with clients on this worker
    subscriptions: int  # rooms the backplane listens to for this worker (-1: all, in memory)
    dropped_slow: int  # clients this worker closed for reading too slowly (1013)
    backplane: str  # its kind: MemoryBackplane, RedisBackplane
    uptime: float  # seconds since this worker's greenlets started (0 before)


class Realtime:
    def __init__(self, config: Config, backplane: Backplane | None = None, presence: Presence | None = None) -> None:
        """One worker's realtime server. `backplane` and `presence` (chatapp/backends.py picks
        them by URL) default to this worker alone: a publish goes straight to its Hub, and the
        members of a room are its Hub's."""
        self.config = config
        self._hub = Hub()
        self._backplane = backplane or MemoryBackplane()
        self._backplane.attach(self._received, self._backplane_changed, lambda room: room in self._hub.rooms)
        self._presence = presence or HubPresence(config.presence_ttl / BEATS)
        self._presence.attach(self._hub, self._presence_expired, self._presence_restored, self._presence_counted)
        self._handlers = Handlers()
        self._expired: PresenceHandler | None = None
        self._restored: PresenceHandler | None = None
        self._counted: CountsHandler | None = None
        self._lifecycle = Lifecycle(config, self._hub, self._backplane, self._presence)
        self._sessions = Sessions(config, self._hub, self._presence, self._handlers, self.start)
        # The layer's own hooks first; an app's (before_upgrade) run after them.
        self._hooks: list[Hook] = [
            check_handshake,
            check_origin(config.allowed_origins),
            WorkerCap(config.max_connections, lambda: self._sessions.running),
            PerAddressCap(config.max_connections_per_ip),
            PerAddressRate(config.connect_rate_limit, CONNECT_WINDOW),
        ]
        self._shutting_down = False  # shutdown() was called

    # -- handlers ---------------------------------------------------------------------------
    def on(self, event_type: str) -> Callable[[Handler], Handler]:
        """Register the handler of one incoming event type: `handler(conn, event)`. Raising
        ProtocolError sends the client an `error` event (with the event's `cid`)."""

        def register(handler: Handler) -> Handler:
            self._handlers.events[event_type] = handler
            return handler

        return register

    def on_connect(self, handler: ConnectHandler) -> ConnectHandler:
        """`handler(conn)` runs before anything is read from the client. What it sends goes out
        before any room event. Raising ProtocolError refuses the client (error event, 1008)."""
        self._handlers.connect = handler
        return handler

    def on_disconnect(self, handler: ConnectHandler) -> ConnectHandler:
        """`handler(conn)` runs once a client whose connect handler succeeded is gone."""
        self._handlers.disconnect = handler
        return handler

    def serve_text(
        self, parse: Callable[[str], dict[str, Any]], render: Callable[[dict[str, Any]], str | None]
    ) -> None:
        """Serve plain-text clients too, at the path + `/text` (a terminal with websocat, the
        seed's page): each text frame they send becomes the event `parse(frame)`, each event
        they are sent the line `render(event)` (None: not shown). Call before init_app."""
        self._handlers.text = TextCodec(parse, render)

    def on_presence_expired(self, handler: PresenceHandler) -> PresenceHandler:
        """`handler(room, info, members)` runs once for a member that went without a disconnect
        (its worker died), when any worker sweeps it out of the room's presence; `members`: how
        many the room has left, on every worker."""
        self._expired = handler
        return handler

    def on_presence_restored(self, handler: PresenceHandler) -> PresenceHandler:
        """`handler(room, info, members)` runs when a member that was swept out of a room's
        presence (wrongly: a stalled worker, say) is found still there, and put back; `members`:
        how many the room has with it, on every worker."""
        self._restored = handler
        return handler

    def on_presence_counted(self, handler: CountsHandler) -> CountsHandler:
        """`handler(counts)` runs every PRESENCE_TTL/4 s on one worker of all (the one that
        sweeps presence), with the member count on every worker of every room that has
        members: where an app tells rooms their counts, once per room."""
        self._counted = handler
        return handler

    def before_upgrade(self, hook: Hook) -> Hook:
        """`hook(upgrade)` runs before each upgrade, after the layer's own checks (handshake,
        origin, connections per address), with the request's headers, cookies and address;
        raising handshake.Refused answers the request with that HTTP status and a JSON error.
        What it puts in `upgrade.data` becomes the connection's `conn.data`."""
        self._hooks.append(hook)
        return hook

    # -- rooms and events -------------------------------------------------------------------
    def join(self, conn: Connection, room: str) -> None:
        """Put `conn` in `room`; every event emitted after this returns reaches it, and it is
        among the room's members (shown as `conn.info`) on every worker. A new room past
        MAX_ROOMS on this worker is refused (ProtocolError too_many_rooms)."""
        cap = self.config.max_rooms
        # Looked at here to spare a refused joiner the subscription; the Hub's count is the exact one.
        if cap and room not in self._hub.rooms and len(self._hub.rooms) >= cap:
            raise _too_many_rooms(cap)
        self._backplane.subscribe(room)  # first: from then on, every event of the room reaches the Hub
        if not self._hub.join(conn, room, cap):
            raise _too_many_rooms(cap)  # the subscription lapses with the room's disuse (backplane)
        self._presence.add(room, conn.id, conn.info)

    def leave(self, conn: Connection, room: str) -> None:
        """Take `conn` out of `room` and its members. The Hub takes commands in order, so no
        event emitted after this returns reaches it there."""
        self._hub.leave(conn, room)
        self._presence.remove(room, conn.id)

    def emit(self, room: str, event: dict[str, Any], seq: int | None = None) -> None:
        """Send `event` to every client in `room`, on every worker. Does not wait for delivery.

        `seq` numbers the event within the room (a message id from the store): a client told
        `skip_through(n)` does not get events numbered up to n."""
        self.start()
        self._backplane.publish(room, encode(event), seq)

    # -- who is where -----------------------------------------------------------------------
    def members(self, room: str, limit: int) -> tuple[list[Info], int]:
        """The `info` of up to `limit` members of `room`, on every worker, and how many there are."""
        return self._presence.members(room, limit)

    def rooms(self) -> dict[str, int]:
        """Rooms with members now, on every worker, and how many members each has."""
        return self._presence.rooms()

    def counts(self, rooms: list[str]) -> dict[str, int]:
        """How many members each of `rooms` has, on every worker."""
        return self._presence.counts(rooms)

    def local_rooms(self) -> dict[str, int]:
        """Rooms with clients on this worker, and how many of this worker's clients each has."""
        return {room: len(members) for room, members in self._hub.rooms.items()}

    @property
    def local_room_count(self) -> int:
        """How many rooms have clients on this worker."""
        return len(self._hub.rooms)

    # -- the worker -------------------------------------------------------------------------
    def start(self) -> None:
        """Start this worker's greenlets of the layer (once; in the worker: lifecycle.py)."""
        self._lifecycle.start()

    def shutdown(self) -> None:
        """Send every client `shutting_down` and close 1001, after what is queued for it."""
        self.start()
        self._shutting_down = True
        self._hub.shutdown()

    def drain(self, timeout: float) -> bool:
        """After `shutdown`: wait until every connection of this worker is over, `timeout`
        seconds at most; False if some are still open then. Without a shutdown nobody was told
        to go: returns True at once. A worker exiting calls it, since gunicorn does not wait for
        WebSockets (their requests ended with the handshake: endpoint.py)."""
        return not self._shutting_down or self._sessions.drain(timeout)

    def stop(self) -> None:
        """At a worker's end, after `drain`: give up what this worker holds for all workers
        (the presence sweeper's lease: another worker takes it at its next beat)."""
        self._lifecycle.stop()

    def sample_metrics(self) -> None:
        """This worker's figures into the metrics now (at worker exit: its last second)."""
        self._lifecycle.sample_metrics()

    def health(self) -> Health:
        return Health(
            healthy=self._lifecycle.hub_alive and self._backplane.healthy,
            connections=len(self._hub.connections),
            rooms=len(self._hub.rooms),
            dropped_slow=self._hub.stats.dropped_slow,
            backplane=type(self._backplane).__name__,
            subscriptions=self._backplane.subscriptions,
            uptime=self._lifecycle.uptime,
        )

    def init_app(self, app: Flask, path: str = "/ws") -> None:
        """Serve the WebSocket at `path` (and `path`/echo with CHAT_ECHO_ROUTE=1), on a blueprint."""
        app.extensions["realtime"] = self
        app.register_blueprint(endpoint.blueprint(path, self.config, self._hooks, self._sessions))

    # -- what the backplane and presence report ---------------------------------------------------
    def _received(self, room: str, event: bytes, seq: int | None) -> None:
        """An event the backplane brought, for the Hub (in the backplane's greenlet)."""
        stats = self._hub.stats
        stats.received += 1
        if room in self._hub.rooms:  # one this worker has clients in (else heard for nobody)
            stats.received_own += 1
        self._hub.publish(room, event, seq)

    def _backplane_changed(self, rooms: frozenset[str], back: bool) -> None:
        """Only the clients of the rooms concerned are told (on a cluster, a failed master's)."""
        if not back:
            detail = "delivery is degraded: events may not reach everyone until the server reconnects"
            self._hub.tell_all(encode(error_event(ErrorCode.DEGRADED, detail)), rooms)
        else:  # what was published meanwhile is in the store: resume with since
            detail = "delivery is back: reconnect to catch up"
            self._hub.close_all(CloseCode.SERVICE_RESTART, ErrorCode.RESYNC, detail, rooms=rooms)

    def _presence_expired(self, room: str, info: Info, members: int) -> None:
        if self._expired is not None:
            self._expired(room, info, members)

    def _presence_restored(self, room: str, info: Info, members: int) -> None:
        if self._restored is not None:
            self._restored(room, info, members)

    def _presence_counted(self, counts: dict[str, int]) -> None:
        if self._counted is not None:
            self._counted(counts)


def _too_many_rooms(cap: int) -> ProtocolError:
    return ProtocolError(ErrorCode.TOO_MANY_ROOMS, f"this server has {cap} rooms open; join one of them")
