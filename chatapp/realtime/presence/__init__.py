"""Presence: who is in a room, across every worker.

HubPresence (one worker): the Hub's rooms are the truth. RedisPresence (REDIS_URL, in
presence/redis.py) shares it between workers. chatapp/backends.py picks one by URL.

Each has a heartbeat, BEATS per PRESENCE_TTL, and at each beat one worker of all (the one
worker; with Redis, the one that sweeps) reports every room's member count (`on_counted`):
work done once per room, not once per worker and room.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import gevent

from ..hub import Hub

log = logging.getLogger(__name__)

Info = dict[str, Any]  # what others see of a connection, e.g. {"id": ..., "name": ...}
Report = Callable[[str, Info, int], None]  # (room, info, the room's members on every worker after it)
Counted = Callable[[dict[str, int]], None]  # room -> members, on every worker

BEATS = 4  # heartbeats per PRESENCE_TTL


class Presence(Protocol):
    def attach(self, hub: Hub, on_expired: Report, on_restored: Report, on_counted: Counted) -> None:
        """Called once, by the Realtime that uses it, before anything else. `hub`: this
        worker's, read only. `on_expired(room, info, members)`: a member that went without a
        disconnect (its worker died) was swept out; `on_restored(room, info, members)`: one
        swept out wrongly (a stalled worker) was found there, and put back; `members`: the
        room's count after it. `on_counted(counts)`: each
        beat, on one worker of all, the member count of every room that has members."""
        ...

    def add(self, room: str, conn_id: str, info: Info) -> None: ...

    def remove(self, room: str, conn_id: str) -> None: ...

    def remove_all(self, conn_id: str) -> None: ...

    def members(self, room: str, limit: int) -> tuple[list[Info], int]:
        """Up to `limit` members of `room`, and how many there are."""
        ...

    def rooms(self) -> dict[str, int]:
        """Rooms with members now, and how many."""
        ...

    def counts(self, rooms: list[str]) -> dict[str, int]:
        """How many members each of `rooms` has, on every worker."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None:
        """At a worker's end: give up what it holds for all workers (a worker that dies holds
        it until it lapses)."""


class HubPresence:
    """One worker: members are the Hub's; adding and removing is the Hub's join and leave.
    Its heartbeat (every `every` s) only reports the counts."""

    def __init__(self, every: float) -> None:
        self._hub = Hub()  # until attached: an empty one
        self._on_counted: Counted = lambda counts: None
        self.every = every  # seconds between heartbeats
        self._heartbeat: gevent.Greenlet | None = None

    def attach(self, hub: Hub, on_expired: Report, on_restored: Report, on_counted: Counted) -> None:
        self._hub = hub  # no worker of its own can die: nothing to report
        self._on_counted = on_counted

    def add(self, room: str, conn_id: str, info: Info) -> None:
        pass

    def remove(self, room: str, conn_id: str) -> None:
        pass

    def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.kill()

    def remove_all(self, conn_id: str) -> None:
        pass

    def members(self, room: str, limit: int) -> tuple[list[Info], int]:
        members, count = self._hub.members(room, limit)
        return [member.info for member in members], count

    def rooms(self) -> dict[str, int]:
        return {room: len(members) for room, members in self._hub.rooms.items()}

    def counts(self, rooms: list[str]) -> dict[str, int]:
        return {room: len(self._hub.rooms.get(room, ())) for room in rooms}

    def start(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = gevent.spawn(self._beat)

    def _beat(self) -> None:
        while True:
            gevent.sleep(self.every)
            try:
                self._on_counted(self.rooms())
            except Exception:
                log.exception("presence: reporting the counts failed")
