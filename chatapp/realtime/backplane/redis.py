"""RedisBackplane: several workers, on one machine or many, joined by Redis pub/sub, a channel
per room (as Socket.IO's sharded Redis adapter): a worker listens only to the rooms it has
clients in, so adding workers adds room for messages too, not only for connections.

Subscriptions, and the listener greenlet that owns the connection:
- `subscribe(room)` is called before a client joins a room (Realtime.join). It returns once
  Redis has confirmed the subscription, so every event published after it returns reaches this
  worker; the client's history is read after that, and nothing falls between the two (an event
  in both is dropped by the client's seq floor). The listener sends what was asked for at its
  next tick (every TICK s at most), all in one SUBSCRIBE: a restart that rejoins 10,000 rooms
  takes one round trip, not 10,000.
- A room this worker no longer has clients in (`in_use`, the Hub's rooms) is kept for LINGER
  seconds (a reload must not churn subscriptions), then unsubscribed; it is taken out of the
  wanted rooms before the UNSUBSCRIBE goes, so a join meanwhile subscribes again, after it.
- Only the listener greenlet uses the connection, to read and to write (SUBSCRIBE,
  UNSUBSCRIBE, PING): others only ask, through `_unasked`. So a failed write is the
  listener's, and goes through its loss path; and should redis-py connect again behind its
  back (it does, on some errors), the listener takes that for a loss too: events sent to
  the old connection are gone, and clients must resume.
- It lets the other greenlets run every TURN_EVERY messages: a busy channel must not stall
  the worker.
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

from ...unavailable import Unavailable
from . import Deliver, InUse, OnChange, unattached

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
PING_EVERY = 1.0  # seconds between the listener's pings
HANG_AFTER = 4.0  # seconds without a word from Redis before the connection counts as lost
SUBSCRIBE_WAIT = 5.0  # seconds a joiner waits for Redis to confirm a room's subscription
TICK = 0.05  # seconds at most between the listener's looks at what was asked for
TURN_EVERY = 64  # messages the listener hands on before it lets the other greenlets run
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


class _Reconnects:
    """The connects of one subscription connection after its first: redis-py's, behind our back."""

    def __init__(self) -> None:
        self.count = 0

    def connected(self, connection: redis.connection.AbstractConnection) -> None:
        self.count += 1


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
        self._reconnects = _Reconnects()  # of the listener's current connection
        # Rooms wanted -> set once Redis confirmed them on the current connection. Added to by
        # any greenlet (subscribe); confirmed, cleared on a loss and let go by the listener.
        self._rooms: dict[str, Event] = {}
        self._unasked: set[str] = set()  # wanted, not yet sent: the listener's next tick sends them together
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
            self._unasked.add(room)  # the listener's next tick sends it, with any others asked for
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
        they are all in place. Any later connect of it is redis-py's, not ours: a loss."""
        self._unasked.clear()
        pubsub.subscribe(ALWAYS, *(channel(room) for room in self._rooms))
        pubsub.ping()
        self._reconnects = _Reconnects()
        pubsub.connection.register_connect_callback(self._reconnects.connected)  # held weakly: we keep it

    def _heard(self, pubsub: redis.client.PubSub) -> Iterator[dict]:
        """What Redis sends (confirmations, events, pongs), pinging it every PING_EVERY and
        letting go of unused rooms; raises Silent when it has said nothing for HANG_AFTER s."""
        heard = next_ping = monotonic()
        handed = 0
        while True:
            if self._reconnects.count:
                raise redis.ConnectionError("the subscription's connection was made again: events may be lost")
            now = monotonic()
            if self._unasked:
                rooms, self._unasked = self._unasked, set()
                pubsub.subscribe(*(channel(room) for room in rooms))
            if now >= next_ping:
                pubsub.ping()  # answered by a pong, after whatever Redis sent before it
                next_ping = now + PING_EVERY
                self._let_go(pubsub, now)
            message = pubsub.get_message(timeout=max(min(next_ping - now, TICK), 0.0))
            if message is not None:
                heard = monotonic()
                handed += 1
                if handed % TURN_EVERY == 0:
                    gevent.sleep(0)  # get_message does not switch while Redis has sent more
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
            for room in gone:  # a join from now on subscribes again, after this UNSUBSCRIBE
                del self._rooms[room], self._unused_since[room]
            pubsub.unsubscribe(*(channel(room) for room in gone))
