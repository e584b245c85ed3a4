"""How a published event travels to every worker's Hub.

A backplane has two jobs (as python-socketio's pub/sub managers): `publish` an already
serialised event for a room, and bring every publish back to this worker's Hub, this worker's
own included, so that each client gets each event exactly once. With one worker that is a
direct hand-over (MemoryBackplane); Redis pub/sub joins several workers (RedisBackplane,
chosen by REDIS_URL: chatapp/backends.py). A backplane is given the one callable it needs of
the Hub, its `publish` (Deliver), by the Realtime that uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Deliver = Callable[[str, bytes, int | None], None]  # (room, event, seq): this worker's Hub.publish
OnChange = Callable[[frozenset[str], bool], None]  # (rooms, back)
InUse = Callable[[str], bool]  # (room): whether this worker has clients in it


class Backplane(Protocol):
    healthy: bool  # False while published events may not reach this worker

    def attach(self, deliver: Deliver, on_change: OnChange, in_use: InUse) -> None:
        """Called once, by the Realtime that uses this backplane, before anything else: every
        publish to a room this worker listens to, its own included, comes back to `deliver`;
        `on_change(rooms, back)` is told of rooms whose events may be missed from now on
        (back=False), and of those heard again after that (back=True: what was published
        meanwhile must be read from the store); `in_use(room)` says whether this worker has
        clients there."""
        ...

    def subscribe(self, room: str) -> None:
        """Listen to `room`: every publish to it after this returns comes to `deliver`. Called
        before a client joins it; raises Unavailable when that cannot be made sure of."""
        ...

    @property
    def subscriptions(self) -> int:
        """Rooms this worker listens to (all of them, for the memory backplane: -1)."""
        ...

    def publish(self, room: str, event: bytes, seq: int | None = None) -> None:
        """Hand `event` to every worker's Hub for `room`. Never raises; returns without waiting
        for delivery (with Redis, after one PUBLISH round trip)."""
        ...

    def start(self) -> None:
        """Start whatever runs in the background (in the worker, after gevent's patching)."""
        ...


class MemoryBackplane:
    """One worker: a publish goes straight into this worker's Hub."""

    healthy = True

    def __init__(self) -> None:
        self._deliver: Deliver = unattached

    def attach(self, deliver: Deliver, on_change: OnChange, in_use: InUse) -> None:
        self._deliver = deliver  # never lost: on_change has nothing to hear

    def subscribe(self, room: str) -> None:
        pass  # every publish is this worker's

    @property
    def subscriptions(self) -> int:
        return -1

    def publish(self, room: str, event: bytes, seq: int | None = None) -> None:
        self._deliver(room, event, seq)

    def start(self) -> None:
        pass


def unattached(room: str, event: bytes, seq: int | None) -> None:
    """A backplane's `deliver` until a Realtime attaches it."""
    raise RuntimeError("this backplane is not attached to a Realtime")
