"""RedisBackplane: several workers, on one machine or many, joined by Redis pub/sub.

Every publish goes to one channel; every worker's listener, the publisher's included, hands
what arrives to its Hub, so each client gets each event once, and every worker sees the
channel's events in the same order. One channel for all rooms (as python-socketio's Redis
manager): a worker never misses the first events of a room it has just joined, at the price
of receiving events of rooms it has no clients in (the Hub drops them at once).

On the wire: `room \\n seq \\n event`, the event's JSON bytes as the publisher serialised
them, never decoded and re-encoded by a worker. Chat messages are published in that format by
the store's own append script (chatapp/store/redis.py), in the step that gives them their id,
so that the channel carries each room's messages in id order; other events come through
`publish`.

Redis that stops answering (hung, or a network that drops packets without a reset) looks like
a quiet channel to a subscriber. So the listener pings every PING_EVERY seconds, and a Redis
that says nothing, pong or event, for HANG_AFTER seconds is taken as lost: reported, and the
subscription made again. It is healthy again only once Redis confirms the new subscription.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from time import monotonic

import gevent
import redis

from . import Deliver, OnChange, unattached

log = logging.getLogger(__name__)

CHANNEL = "chat:events"
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
PING_EVERY = 1.0  # seconds between the listener's pings
HANG_AFTER = 4.0  # seconds without a word from Redis before the subscription counts as lost


class Silent(redis.ConnectionError):
    """Redis said nothing, not even a pong, for HANG_AFTER seconds."""


class RedisBackplane:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._deliver: Deliver = unattached
        self._on_change: OnChange = lambda healthy, recovered: None
        self.healthy = False  # until the first subscription
        self._listener: gevent.Greenlet | None = None

    def attach(self, deliver: Deliver, on_change: OnChange) -> None:
        """`deliver` and `on_change(healthy, recovered)` are called from the listener greenlet:
        each event heard, and the subscription lost (False, False) or made again after a loss
        (True, True)."""
        self._deliver = deliver
        self._on_change = on_change

    def publish(self, room: str, event: bytes, seq: int | None = None) -> None:
        """One PUBLISH round trip (the caller's greenlet waits for it, not for delivery); one
        retry. A message lost here is in the store: clients get it when they resume."""
        message = f"{room}\n{'' if seq is None else seq}\n".encode() + event
        for attempt in (1, 2):
            try:
                self._redis.publish(CHANNEL, message)
                return
            except redis.RedisError as exc:
                if attempt == 2:  # an outage: the listener sees it too, and reports it
                    log.error("publish to %s lost: %s", room, exc)

    def start(self) -> None:
        if self._listener is None:
            self._listener = gevent.spawn(self._listen)

    def _received(self, data: bytes) -> None:
        try:
            room, seq, event = data.split(b"\n", 2)
            self._deliver(room.decode(), event, int(seq) if seq else None)
        except ValueError:  # not ours (another program on the channel): drop it alone
            log.warning("backplane: dropped a malformed message on %s: %r", CHANNEL, data[:80])

    def _listen(self) -> None:
        """The listener greenlet: the only reader of the subscription. Hands each event to
        `deliver` (the Hub); on a lost or silent connection, reports it and subscribes again
        with capped backoff."""
        backoff, lost = BACKOFF_FIRST, False
        while True:
            pubsub = self._redis.pubsub()
            try:
                pubsub.subscribe(CHANNEL)
                for message in _heard(pubsub):
                    kind = message["type"]
                    if kind == "message":
                        self._received(message["data"])
                    elif kind == "subscribe":  # confirmed: from now on every publish reaches us
                        self.healthy, backoff = True, BACKOFF_FIRST
                        if lost:
                            log.warning("backplane: subscribed to Redis again")
                            self._on_change(True, True)
            except redis.RedisError as exc:
                log.warning("backplane: Redis connection lost (%s); retrying in %.1f s", exc, backoff)
            except Exception:  # a bug must not end delivery for good
                log.exception("backplane: listener failed; retrying in %.1f s", backoff)
            finally:
                pubsub.close()
            if self.healthy or not lost:
                self.healthy, lost = False, True
                self._on_change(False, False)
            gevent.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, BACKOFF_CAP)


def _heard(pubsub: redis.client.PubSub) -> Iterator[dict]:
    """What Redis sends on the subscription (subscribe confirmations, events, pongs), pinging it
    every PING_EVERY; raises Silent when it has said nothing for HANG_AFTER seconds."""
    heard = next_ping = monotonic()
    while True:
        now = monotonic()
        if now >= next_ping:
            pubsub.ping()  # answered by a pong, after whatever Redis sent before it
            next_ping = now + PING_EVERY
        message = pubsub.get_message(timeout=max(next_ping - now, 0.0))
        if message is not None:
            heard = monotonic()
            yield message
        elif monotonic() - heard > HANG_AFTER:
            raise Silent(f"no answer from Redis for {HANG_AFTER:.0f} s")
