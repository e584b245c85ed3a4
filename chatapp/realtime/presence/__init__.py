"""Presence: who is in a room, across every worker.

HubPresence (one worker): the Hub's rooms are the truth. RedisPresence (REDIS_URL, in
presence/redis.py) shares it between workers. chatapp/backends.py picks one by URL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..hub import Hub

Info = dict[str, Any]  # what others see of a connection, e.g. {"id": ..., "name": ...}
Report = Callable[[str, Info], None]  # (room, info)


class Presence(Protocol):
    def attach(self, hub: Hub, on_expired: Report, on_restored: Report) -> None:
        """Called once, by the Realtime that uses it, before anything else. `hub`: this
        worker's, read only. `on_expired(room, info)`: a member that went without a
        disconnect (its worker died) was swept out; `on_restored(room, info)`: one swept out
        wrongly (a stalled worker) was found there, and put back."""
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
    """One worker: members are the Hub's; adding and removing is the Hub's join and leave."""

    def __init__(self) -> None:
        self._hub = Hub()  # until attached: an empty one

    def attach(self, hub: Hub, on_expired: Report, on_restored: Report) -> None:
        self._hub = hub  # no worker of its own can die: nothing to report

    def add(self, room: str, conn_id: str, info: Info) -> None:
        pass

    def remove(self, room: str, conn_id: str) -> None:
        pass

    def stop(self) -> None:
        pass

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
        pass
