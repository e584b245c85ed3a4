"""Message history: ids come from here, never from one worker's memory.

Two implementations of one interface, chosen by configuration: SQLite (one machine, the
default) and Redis (REDIS_URL: several workers or machines). Both give each message an
integer id, as a string, unique and increasing within its room, and keep a room's newest
HISTORY_LIMIT messages.

Ids are unique within an epoch: a store that loses a room's data (a Redis restarted without
its data, a deleted SQLite file) starts its ids again under a new epoch, so a client's
`since` from before is never taken for a message of after (History.reset).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

Message = dict[str, Any]

# What one read hands over, at most: a welcome, or a page of the API, is one read, and one
# client must not make the worker read and encode megabytes (it pages the rest).
READ_BYTES = 256 * 1024
MESSAGE_OVERHEAD = 200  # bytes a message weighs in JSON besides its text (ids, names, time)


@dataclass(frozen=True, slots=True)
class History:
    """What `Store.read` found: messages oldest first, and how they relate to `since`."""

    messages: list[Message]
    epoch: str  # the generation of the room's ids in this store (opaque)
    truncated: bool = False  # `since` is not kept here: `messages` are the last ones, some may be missing
    reset: bool = False  # `since` is from another epoch, or beyond the room's last id: forget what it showed
    more: bool = False  # READ_BYTES left some out: older ones (the last ones were asked), or later ones


def within(messages: Iterable[Message], budget: int = READ_BYTES) -> tuple[list[Message], bool]:
    """Messages from `messages`, in its order, while they fit in `budget` bytes of JSON, and
    whether it had more. Given a cursor, it reads no row past the bound."""
    taken = []
    for message in messages:
        budget -= len(message["text"].encode()) + MESSAGE_OVERHEAD
        if budget < 0:
            return taken, True
        taken.append(message)
    return taken, False


class Counted(NamedTuple):
    """A room's messages, as Store.counts gives them."""

    kept: int  # messages kept
    last: int  # the newest one's id


class Store(Protocol):
    # True when append_many also publishes each new message to every worker (Redis: in the same
    # step that takes its id, so a room's channel carries its messages in id order); the caller
    # then must not publish them again.
    publishes: bool

    def append_many(self, items: list[tuple[str, Message]]) -> list[tuple[Message, bool] | Exception]:
        """Store each (room, message) in order, at the cost of about one: one transaction
        (SQLite), one round trip (Redis). A message ({ts, user: {id, name, uid?}, text, cid?})
        is stored unless its room already holds its cid from the same sender (`sender`: the
        user's uid, or its id when it has none), so that no one can send a cid of another's.

        One result per item: the stored message (with type, id and room) and whether it is
        new (a resend gets the message stored the first time), or the exception that refused
        that item alone. Raises Unavailable when the store cannot be reached: then SQLite
        stored none of them, Redis maybe some (a resend with the same cid finds those)."""
        ...

    def read(self, room: str, since: int | None, epoch: str | None, limit: int, page: int | None = None) -> History:
        """A room's history in one consistent read, oldest first.

        - No `since`: the last `limit` messages.
        - A `since` that cannot be from this store's ids (of another `epoch`, or beyond the
          last id given): the last `limit`, truncated and reset.
        - A `since` kept here: the messages after it, all of them or the first `page`.
        - A `since` no longer kept (pruned): with `page`, the first `page` after it (paging
          on); without, the last `limit` (catching up); truncated either way.

        At most READ_BYTES of them: the first that fit of a page, else the newest that fit;
        `more` says some were left out (the client pages them from the API)."""
        ...

    def counts(self, rooms: list[str]) -> dict[str, Counted]:
        """Of the given rooms, each that has messages: how many are kept, and its newest id."""
        ...


def sender(message: Message) -> str:
    """Whose cids a message's cid is among: its user's uid, or (without one) its user's id."""
    user = message["user"]
    return user.get("uid") or user["id"]


def append(store: Store, room: str, message: Message) -> tuple[Message, bool]:
    """One message through `append_many`; an error refusing it is raised."""
    result = store.append_many([(room, message)])[0]
    if isinstance(result, Exception):
        raise result
    return result


def recent(store: Store, room: str, limit: int) -> list[Message]:
    """The last `limit` messages of `room`, oldest first."""
    return store.read(room, None, None, limit).messages
