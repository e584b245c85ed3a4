"""Stand-ins for connections where the Hub is all a test drives (no socket)."""

from __future__ import annotations

import json
from typing import Any

from gevent.queue import Queue

from chatapp.realtime import Realtime
from chatapp.realtime.hub import Batch
from chatapp.realtime.protocol import CloseCode, ErrorCode


class Listener:
    """A member that takes whatever the Hub offers and keeps the events, decoded."""

    def __init__(self, name: str) -> None:
        self.id = name
        self.rooms: set[str] = set()  # the Hub's
        self.info: dict[str, Any] = {"id": name}
        self.data: dict[str, Any] = {}
        self.batches: Queue = Queue()
        self.closed: tuple[CloseCode, ErrorCode | None, str] | None = None
        self.queued = 0  # what the metrics read: offers are taken at once

    def offer(self, item: Batch | object) -> bool:
        if type(item) is Batch:
            self.batches.put(item)
        return True

    def close(self, code: CloseCode, error: ErrorCode | None = None, detail: str = "") -> None:
        self.closed = (code, error, detail)

    def events(self) -> list[dict[str, Any]]:
        """Every event offered so far (the Hub has handled what came before: see `settle`)."""
        found = []
        while not self.batches.empty():
            found += [json.loads(event) for event in self.batches.get().events]
        return found


def listener(rt: Realtime, name: str, *rooms: str) -> Listener:
    """A Listener registered with `rt`'s Hub (as a session registers its connection), and put
    in `rooms` through the API."""
    member = Listener(name)
    rt._hub.register(member)
    for room in rooms:
        rt.join(member, room)  # type: ignore[arg-type]
    return member
