"""RedisBackplane: several workers, on one machine or many, joined by Redis pub/sub, a channel
per room (as Socket.IO's sharded Redis adapter): a worker listens only to the rooms it has
clients in, so adding workers adds room for messages too, not only for connections.

Subscriptions, and the listener greenlet that owns the connection:
- `subscribe(room)` is called before a client joins a room (Realtime.join). It returns once
  Redis has confirmed the subscription, so every event published after it returns reaches this
  worker; the client's history is read after that, and nothing falls between the two (an event
  in both is dropped by the client's seq floor). Subscriptions asked for together (a restart
  that rejoins 10,000 rooms) go out as one SUBSCRIBE.
- A room this worker no longer has clients in (`in_use`, the Hub's rooms) is kept for LINGER
  seconds (a reload must not churn subscriptions), then unsubscribed; it is taken out of the
  wanted rooms before the UNSUBSCRIBE goes, so a join meanwhile subscribes again, after it.
- Only the listener greenlet reads the connection. Writes (SUBSCRIBE, UNSUBSCRIBE, the
  listener's PING) come from several greenlets and take `_writing` first, so commands are
  never interleaved on the socket.
- A lost connection clears every confirmation; the listener connects again with capped
  backoff, subscribes every wanted room in one SUBSCRIBE and pings: Redis answers in order, so
  the pong says all are in place. Then it is healthy again, and `on_change(True, True)` (the
  clients resume with `since`: what was published meanwhile is in the store).

Redis that stops answering (hung, or a network that drops packets without a reset) looks like
a quiet channel to a subscriber. So the listener pings every PING_EVERY seconds, and a Redis
that says nothing, pong or event, for HANG_AFTER seconds is taken as lost.

On the wire: channel `chat:{room}:events` (the braces: the room's cluster slot, with its
keys), payload `seq \\n event`, the event's JSON bytes as the publisher serialised them. Chat
messages are published there by the store's own append script (chatapp/store/redis.py), in
the step that gives them their id, so a room's channel carries its messages in id order.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from time import monotonic

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore

from ...unavailable import Unavailable
from . import Deliver, InUse, OnChange, unattached

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
PING_EVERY = 1.0  # seconds between the listener's pings
HANG_AFTER = 4.0  # seconds without a word from Redis before the connection counts as lost
SUBSCRIBE_WAIT = 5.0  # seconds a joiner waits for Redis to confirm a room's subscription
LINGER = 30.0  # seconds a room without clients here stays subscribed
# Always subscribed, though nothing is published there: a connection with no subscription
# is not in pub/sub mode, where Redis answers a PING with a pong message the listener reads.
ALWAYS = "chat:backplane"


def channel(room: str) -> str:
    """The channel of `room`'s events (in its cluster slot)."""
    return f"chat:{{{room}}}:events"


def _room_of(name: bytes) -> str:
    """The room of a channel (of ALWAYS: none)."""
    return name.decode().removeprefix("chat:{").removesuffix("}:events")


class Silent(redis.ConnectionError):
    """Redis said nothing, not even a pong, for HANG_AFTER seconds."""


class RedisBackplane:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._deliver: Deliver = unattached
        self._on_change: OnChange = lambda healthy, recovered: None
        self._in_use: InUse = lambda room: True
        self.healthy = False  # until the listener's first pong
        self._lost = False  # the connection was lost since it was first made (the listener's)
        self._listener: gevent.Greenlet | None = None
        self._pubsub: redis.client.PubSub | None = None  # the listener's connection, while it has one
        self._writing = Semaphore()
        # Rooms wanted -> set once Redis confirmed them on the current connection. Changed by
        # any greenlet (subscribe), the listener (confirmations, losses) and the linger sweep.
        self._rooms: dict[str, Event] = {}
        self._unasked: set[str] = set()  # wanted, not yet sent: the next flush sends them together
        self._unused_since: dict[str, float] = {}  # rooms without clients here, since (monotonic)

    def attach(self, deliver: Deliver, on_change: OnChange, in_use: InUse) -> None:
        """`deliver` and `on_change(healthy, recovered)` are called from the listener greenlet:
        each event heard, and the connection lost (False, False) or made again after a loss
        (True, True). `in_use(room)`: whether this worker still has clients in `room`."""
        self._deliver = deliver
        self._on_change = on_change
        self._in_use = in_use

    @property
    def subscriptions(self) -> int:
        """Rooms this worker listens to (confirmed by Redis)."""
        return sum(1 for confirmed in self._rooms.values() if confirmed.is_set())

    def subscribe(self, room: str) -> None:
        """Listen to `room` from now on; returns once Redis has confirmed it, or raises
        Unavailable: at once while Redis is away (after a loss), else after SUBSCRIBE_WAIT (a
        worker just started waits for its first connection)."""
        if self._lost and not self.healthy:  # the listener is connecting again: the client had better retry
            raise Unavailable("the backplane (Redis) cannot be reached now; try again")
        confirmed = self._rooms.get(room)
        if confirmed is None:
            confirmed = self._rooms[room] = Event()
            self._unasked.add(room)
            if len(self._unasked) == 1:  # the first of a burst: the others join its SUBSCRIBE
                gevent.spawn(self._flush)
        self._unused_since.pop(room, None)
        if not confirmed.wait(SUBSCRIBE_WAIT):
            raise Unavailable("the backplane (Redis) did not confirm the room's subscription in time")

    def publish(self, room: str, event: bytes, seq: int | None = None) -> None:
        """One PUBLISH round trip (the caller's greenlet waits for it, not for delivery). A
        message lost here is in the store: clients get it when they resume."""
        try:
            self._redis.publish(channel(room), b"%b\n%b" % (b"" if seq is None else b"%d" % seq, event))
        except redis.RedisError as exc:  # an outage: the listener sees it too, and reports it
            log.error("publish to %s lost: %s", room, exc)

    def start(self) -> None:
        if self._listener is None:
            self._listener = gevent.spawn(self._listen)

    def _flush(self) -> None:
        """Send every room asked for and not yet sent, in one SUBSCRIBE (if connected: else the
        listener sends them all when it connects)."""
        rooms, self._unasked = self._unasked, set()
        pubsub = self._pubsub
        if pubsub is None or not rooms:
            return
        try:
            with self._writing:
                pubsub.subscribe(*(channel(room) for room in rooms))
        except redis.RedisError as exc:  # the listener sees the loss, and sends them again
            log.warning("backplane: subscribing to %d rooms failed: %s", len(rooms), exc)

    def _received(self, message: dict) -> None:
        room = _room_of(message["channel"])
        try:
            seq, event = message["data"].split(b"\n", 1)
            self._deliver(room, event, int(seq) if seq else None)
        except ValueError:  # not ours (another program on the channel): drop it alone
            log.warning("backplane: dropped a malformed message for %s: %r", room, message["data"][:80])

    def _listen(self) -> None:
        """The listener greenlet: the only reader of the connection. Hands each event to
        `deliver` (the Hub); on a lost or silent connection, reports it and connects again
        with capped backoff."""
        backoff = BACKOFF_FIRST
        while True:
            pubsub = self._redis.pubsub()
            try:
                self._connect(pubsub)
                for message in self._heard(pubsub):
                    kind = message["type"]
                    if kind == "message":
                        self._received(message)
                    elif kind == "subscribe":  # from now on every publish to the room reaches us
                        confirmed = self._rooms.get(_room_of(message["channel"]))
                        if confirmed is not None:
                            confirmed.set()
                    elif kind == "pong" and not self.healthy:  # after every SUBSCRIBE sent before it
                        self.healthy, backoff = True, BACKOFF_FIRST
                        if self._lost:
                            log.warning("backplane: connected to Redis again")
                            self._on_change(True, True)
            except redis.RedisError as exc:
                log.warning("backplane: Redis connection lost (%s); retrying in %.1f s", exc, backoff)
            except Exception:  # a bug must not end delivery for good
                log.exception("backplane: listener failed; retrying in %.1f s", backoff)
            finally:
                self._pubsub = None
                for confirmed in self._rooms.values():
                    confirmed.clear()
                pubsub.close()
            if self.healthy or not self._lost:
                self.healthy, self._lost = False, True
                self._on_change(False, False)
            gevent.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, BACKOFF_CAP)

    def _connect(self, pubsub: redis.client.PubSub) -> None:
        """A new connection: every wanted room in one SUBSCRIBE, then a PING, whose pong says
        they are all in place."""
        with self._writing:
            self._unasked.clear()
            pubsub.subscribe(ALWAYS, *(channel(room) for room in self._rooms))
            pubsub.ping()
            self._pubsub = pubsub

    def _heard(self, pubsub: redis.client.PubSub) -> Iterator[dict]:
        """What Redis sends (confirmations, events, pongs), pinging it every PING_EVERY and
        letting go of unused rooms; raises Silent when it has said nothing for HANG_AFTER s."""
        heard = next_ping = monotonic()
        while True:
            now = monotonic()
            if now >= next_ping:
                with self._writing:
                    pubsub.ping()  # answered by a pong, after whatever Redis sent before it
                next_ping = now + PING_EVERY
                self._let_go(pubsub, now)
            message = pubsub.get_message(timeout=max(next_ping - now, 0.0))
            if message is not None:
                heard = monotonic()
                yield message
            elif monotonic() - heard > HANG_AFTER:
                raise Silent(f"no answer from Redis for {HANG_AFTER:.0f} s")

    def _let_go(self, pubsub: redis.client.PubSub, now: float) -> None:
        """Unsubscribe, in one UNSUBSCRIBE, the rooms without clients here for LINGER s."""
        gone = []
        for room in list(self._rooms):
            if self._in_use(room):
                self._unused_since.pop(room, None)
            elif now - self._unused_since.setdefault(room, now) >= LINGER:
                gone.append(room)
        if gone:
            for room in gone:  # first: a join from now on subscribes again, after the UNSUBSCRIBE
                del self._rooms[room], self._unused_since[room]
            with self._writing:
                pubsub.unsubscribe(*(channel(room) for room in gone))
