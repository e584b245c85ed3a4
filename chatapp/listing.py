"""Listing: the rooms with people now, as `/api/rooms` gives them, at a cost that does not grow
with the number of rooms.

The rooms a caller names (the page names its recent ones) are counted at once. Besides them,
the busiest LISTED of the rooms this worker has clients in, counted on every worker, and
reused for FRESH seconds or until this worker has clients in more or fewer rooms: every open
page polls, and counting every room on every poll would be, at 100,000 rooms, the largest
load on Redis (docs/scaling.md). So a room with people on other workers only is listed when
named; a count in the listing may be FRESH seconds old.
"""

from __future__ import annotations

import heapq
from time import monotonic

from .realtime import Realtime
from .store import Counted, Store

LISTED = 100  # busiest rooms listed besides the ones named
FRESH = 10.0  # seconds the busiest rooms' counts are reused
NONE = Counted(0, 0)  # a room without messages


class Listing:
    def __init__(self, rt: Realtime, store: Store) -> None:
        self._rt = rt
        self._store = store
        self._busiest: dict[str, tuple[int, Counted]] = {}  # room -> (members, messages), as counted
        self._counted_at = -FRESH  # monotonic
        self._rooms_here = -1  # how many rooms this worker had clients in then

    def rooms(self, named: list[str]) -> list[dict[str, int | str]]:
        """{"room", "members", "messages", "last"} of each room with people (the busiest of this
        worker's), and of each room `named` that has people or messages, counted now: `last` is
        its newest message's id (the page counts a recent room's unread messages when it moved)."""
        if monotonic() - self._counted_at >= FRESH or self._rt.local_room_count != self._rooms_here:
            here = self._rt.local_rooms()
            self._busiest = self._counted(heapq.nsmallest(LISTED, here, key=lambda room: (-here[room], room)))
            self._counted_at, self._rooms_here = monotonic(), len(here)
        found = {room: (members, messages) for room, (members, messages) in self._busiest.items() if members}
        found.update(
            (room, (members, messages))
            for room, (members, messages) in self._counted(named).items()
            if members or messages.kept
        )
        return [
            {"room": room, "members": members, "messages": messages.kept, "last": str(messages.last)}
            for room, (members, messages) in sorted(found.items())
        ]

    def _counted(self, rooms: list[str]) -> dict[str, tuple[int, Counted]]:
        if not rooms:
            return {}
        members, messages = self._rt.counts(rooms), self._store.counts(rooms)
        return {room: (members.get(room, 0), messages.get(room, NONE)) for room in rooms}
