"""How a published event travels to every worker's Hub.

A backplane has two jobs (as python-socketio's pub/sub managers): `publish` an already
serialised event for a room, and bring every publish back to this worker's Hub, this worker's
own included, so that each client gets each event exactly once. With one worker that is a
direct hand-over (MemoryBackplane); Redis pub/sub joins several workers (RedisBackplane,
chosen by REDIS_URL).
"""

from __future__ import annotations

from typing import Protocol

from ..hub import Hub


class Backplane(Protocol):
    healthy: bool  # False while published events may not reach every worker

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

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def publish(self, room: str, event: bytes, seq: int | None = None) -> None:
        self._hub.publish(room, event, seq)

    def start(self) -> None:
        pass
