"""Message history: ids come from here, never from one worker's memory.

Two implementations of one interface, chosen by configuration: SQLite (one machine, the
default) and Redis (REDIS_URL: several workers or machines). Both give each message an
integer id, as a string, unique and increasing within its room, and keep a room's newest
HISTORY_LIMIT messages.
"""

from __future__ import annotations

from typing import Any, Protocol

Message = dict[str, Any]


class Store(Protocol):
    def append_many(self, items: list[tuple[str, Message]]) -> list[tuple[Message, bool] | Exception]:
        """Store each (room, message) in order, at the cost of about one: one transaction
        (SQLite), one round trip (Redis). A message is stored unless its room already holds
        its cid ({ts, user: {id, name}, text, cid?}).

        One result per item: the stored message (with type, id and room) and whether it is
        new (a resend gets the message stored the first time), or the exception that refused
        that item alone. Raises Unavailable when the store cannot be reached: then SQLite
        stored none of them, Redis maybe some (a resend with the same cid finds those)."""
        ...

    def recent(self, room: str, limit: int) -> list[Message]:
        """The last `limit` messages of `room`, oldest first."""
        ...

    def after(self, room: str, since: int, limit: int = -1) -> tuple[list[Message], bool]:
        """Up to `limit` (default: all) messages of `room` after id `since`, oldest first, and
        whether `since` is unknown here (never was, or pruned): then some may be missing."""
        ...

    def counts(self, rooms: list[str]) -> dict[str, int]:
        """Messages kept per room, for the given rooms."""
        ...


def append(store: Store, room: str, message: Message) -> tuple[Message, bool]:
    """One message through `append_many`; an error refusing it is raised."""
    result = store.append_many([(room, message)])[0]
    if isinstance(result, Exception):
        raise result
    return result
