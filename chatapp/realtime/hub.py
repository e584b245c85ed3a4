"""The Hub: which connection is in which room, and the fan-out of events to them.

Concurrency story (one worker process, gevent greenlets, no threads):

- One Hub greenlet runs `Hub.run`. It is the only code that changes `rooms`, `connections`
  and each connection's `rooms` set, so none of them needs a lock. Everything else asks it
  through `inbox` with one command object each (Register, Join, Publish...), taken in order.
  Other greenlets may read `rooms` (gevent switches only at blocking calls, so a read sees a
  consistent state), never write it.
- Each round the Hub takes every command waiting (up to MAX_ROUND). Publishes to one room are
  joined into one Batch: each event was serialised once by its publisher, the batch is framed
  once, and every member gets the same bytes object. A membership change first delivers what
  was published before it, so a joiner never gets older events and a leaver misses none.
- Delivery never blocks the Hub: `Connection.offer` writes the event at once when the
  client has no writer running (one non-blocking send, which never switches: what the kernel
  does not take goes to a writer greenlet), else puts it in the client's bounded queue. A
  full queue means that client reads too slowly: it alone is closed with 1013 and taken out
  of every room at once; the Hub and every other client go on.
- A client's socket is written only by `offer`'s send and its writer greenlet (client.py),
  never both at once, so frames are whole and in order.
- `stats` (metrics.Stats) are plain counters: the Hub and every connection's reader and writer
  add to them (gevent never switches inside a `+=`, so no lock), the sampler greenlet reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import islice
from typing import NamedTuple, Protocol

from gevent.event import AsyncResult
from gevent.queue import Queue

from ..unavailable import Unavailable
from .framing import Batch
from .metrics import Stats
from .protocol import CloseCode, ErrorCode

log = logging.getLogger(__name__)

MAX_ROUND = 512  # commands handled per round: bounds a round's latency and a batch's size
# Seconds a joiner waits for the Hub before giving up: the Hub is stuck, or the worker so busy
# (a storm of connects queued ahead of it) that the client had better come back later.
ACK_TIMEOUT = 5.0


class PingTick:
    """The queue item that asks a client's writer to ping its peer (after checking that the
    peer answered the last one). One ticker sends it to everyone, so idle writers need no timers."""

    __slots__ = ()
    size = 0  # what it weighs in a send queue


PING = PingTick()


class Member(Protocol):
    """What the Hub needs of a connection (client.Connection)."""

    id: str
    rooms: set[str]  # owned by the Hub greenlet
    info: dict  # what others see of it (presence)

    def offer(self, item: Batch | PingTick) -> bool: ...

    def close(self, code: CloseCode, error: ErrorCode | None = None, detail: str = "") -> None: ...


# -- the inbox's commands -----------------------------------------------------------------------
class Register(NamedTuple):
    conn: Member


class Unregister(NamedTuple):
    conn: Member


class Join(NamedTuple):
    conn: Member
    room: str
    max_rooms: int  # a new room past this many on the worker is refused (0: no cap)
    # The outcome: True (done, or the joiner is gone), False (refused: max_rooms), set by the
    # Hub; or HubStuck, set by the joiner that gave up waiting, and the Hub then skips it.
    done: AsyncResult


class Leave(NamedTuple):
    conn: Member
    room: str


class Publish(NamedTuple):
    room: str
    event: bytes  # serialised once, by the publisher
    seq: int | None  # orders the event within its room (a message id)


class TellAll(NamedTuple):
    event: bytes
    rooms: frozenset[str] | None  # None: every connection, else those in any of these rooms


class Ping(NamedTuple):
    turn: int  # pings the connections whose turn this is: hash(id) % parts == turn
    parts: int


class CloseAll(NamedTuple):
    code: CloseCode
    error: ErrorCode
    detail: str
    refuse_new: bool
    rooms: frozenset[str] | None = None  # None: every connection, else those in any of these rooms


Command = Register | Unregister | Join | Leave | Publish | TellAll | Ping | CloseAll


class HubStuck(Unavailable):
    """The Hub did not answer within ACK_TIMEOUT, or could not take the joiner: the client is
    refused as when a backend is away (`unavailable`, 1013 on connect), and may try again."""


class Hub:
    def __init__(self) -> None:
        self._inbox: Queue[Command] = Queue()  # unbounded: publishers never block on the Hub
        self.rooms: dict[str, dict[str, Member]] = {}
        self.connections: dict[str, Member] = {}
        self.closing: tuple[CloseCode, ErrorCode, str] | None = None  # set: refuse newcomers
        self.stats = Stats()  # this worker's hot-path counts (the Hub's and its connections')

    # -- asked from any greenlet ------------------------------------------------------------
    def register(self, conn: Member) -> None:
        self._inbox.put(Register(conn))

    def unregister(self, conn: Member) -> None:
        self._inbox.put(Unregister(conn))

    def join(self, conn: Member, room: str, max_rooms: int = 0) -> bool:
        """Put `conn` in `room`; returns True once the Hub has done it, so every event
        published after this call returns reaches `conn`. False, and nothing joined, if `room`
        would be a new room past `max_rooms` on this worker (0: no cap): the Hub alone counts
        the rooms, so joiners racing to open rooms cannot pass the cap together."""
        done: AsyncResult = AsyncResult()
        self._inbox.put(Join(conn, room, max_rooms, done))
        try:
            done.wait(ACK_TIMEOUT)
        finally:  # given up (or interrupted): not applied later, when the client was told it failed
            if not done.ready():
                done.set_exception(HubStuck(f"the hub did not answer a join within {ACK_TIMEOUT} s"))
        if not done.get():
            return False
        if room not in conn.rooms:  # unregistered, dropped, or the join failed
            raise HubStuck(f"{conn.id} could not join {room}")
        return True

    def leave(self, conn: Member, room: str) -> None:
        self._inbox.put(Leave(conn, room))

    def publish(self, room: str, event: bytes, seq: int | None = None) -> None:
        """Deliver one serialised event to every member of `room` (non-blocking). `seq`, if
        given, orders the event within the room (a message id)."""
        self._inbox.put(Publish(room, event, seq))

    def ping_turn(self, turn: int, parts: int) -> None:
        """Ask the writers of one `parts`-th of the connections (those whose turn `turn` is, the
        same ones every time) to ping their peers."""
        self._inbox.put(Ping(turn, parts))

    def tell_all(self, event: bytes, rooms: frozenset[str] | None = None) -> None:
        """Send one serialised event to every connection of this worker (or, given `rooms`,
        to each connection in any of them, once)."""
        self._inbox.put(TellAll(event, rooms))

    def close_all(
        self,
        code: CloseCode,
        error: ErrorCode,
        detail: str,
        refuse_new: bool = False,
        rooms: frozenset[str] | None = None,
    ) -> None:
        """Close every connection (or, given `rooms`, each in any of them) after what is
        queued for it; with `refuse_new`, close every later one too, at once."""
        self._inbox.put(CloseAll(code, error, detail, refuse_new, rooms))

    def shutdown(self) -> None:
        """Close every connection with 1001 and refuse new ones."""
        self.close_all(CloseCode.GOING_AWAY, ErrorCode.SHUTTING_DOWN, "server is restarting", refuse_new=True)

    @property
    def inbox_size(self) -> int:
        """Commands waiting for the Hub."""
        return self._inbox.qsize()

    def members(self, room: str, limit: int) -> tuple[list[Member], int]:
        """Up to `limit` members of `room` (in the order they joined), and how many there are."""
        members = self.rooms.get(room, {})
        return list(islice(members.values(), limit)), len(members)

    # -- the Hub greenlet ----------------------------------------------------------------------
    def run(self) -> None:
        """The Hub greenlet: the only writer of rooms and connections. Never returns."""
        inbox = self._inbox
        while True:
            commands = [inbox.get()]
            for _ in range(min(inbox.qsize(), MAX_ROUND - 1)):
                commands.append(inbox.get_nowait())
            try:
                self.handle_round(commands)
            except Exception:  # a bug here must not end delivery for everyone
                log.exception("hub round failed")

    def handle_round(self, commands: Iterable[Command]) -> None:
        """One round: each room's publishes joined into one batch, delivered at the end of the
        round, or before a command that changes who gets them."""
        pending: dict[str, tuple[list[bytes], list[int | None]]] = {}  # room: (events, seqs)
        for command in commands:
            if type(command) is Publish:  # the fast path: most commands are publishes
                room, event, seq = command
                entry = pending.get(room)
                if entry is None:
                    entry = pending[room] = ([], [])
                entry[0].append(event)
                entry[1].append(seq)
                continue
            try:
                self._apply(command, pending)
            except Exception:  # one bad command must not cost the round's other events
                log.exception("hub command %s failed", type(command).__name__)
                if type(command) is Join and not command.done.ready():
                    command.done.set(True)  # the joiner stops waiting; it is not in the room
        for room, (events, seqs) in pending.items():
            self._fan_out(room, events, seqs)

    def _apply(self, command: Command, pending: dict[str, tuple[list[bytes], list[int | None]]]) -> None:
        """Any command but a publish. One that changes who is in a room first delivers what
        was published to it before (`_deliver`), so a joiner never gets older events and a
        leaver misses none."""
        match command:
            case Register(conn):
                self.connections[conn.id] = conn
                if self.closing:
                    conn.close(*self.closing)
            case Unregister(conn):
                self._deliver(pending, list(conn.rooms))  # a delivery may drop it from its rooms
                self._remove(conn)
                self.connections.pop(conn.id, None)
            case Join(conn, room, max_rooms, done):
                if done.ready():  # its joiner gave up waiting (HubStuck)
                    return
                if max_rooms and room not in self.rooms and len(self.rooms) >= max_rooms:
                    done.set(False)
                    return
                self._deliver(pending, (room,))
                if conn.id in self.connections:  # not if it was dropped or unregistered meanwhile
                    conn.rooms.add(room)
                    self.rooms.setdefault(room, {})[conn.id] = conn
                done.set(True)
            case Leave(conn, room):
                self._deliver(pending, (room,))
                self._leave(conn, room)
            case TellAll(event, rooms):
                self._deliver(pending, list(pending))
                self._offer_all(self._in(rooms), Batch([event]))
            case Ping(turn, parts):
                self._offer_all([c for c in self.connections.values() if hash(c.id) % parts == turn], PING)
            case CloseAll(code, error, detail, refuse_new, rooms):
                self._deliver(pending, list(pending))
                if refuse_new:
                    self.closing = (code, error, detail)
                for conn in self._in(rooms):
                    conn.close(code, error, detail)
            case _:
                raise TypeError(f"not a hub command: {command!r}")

    def _in(self, rooms: frozenset[str] | None) -> Iterable[Member]:
        """Every connection, or (given `rooms`) each in any of them, once."""
        if rooms is None:
            return list(self.connections.values())
        found: dict[str, Member] = {}
        for room in rooms:
            found.update(self.rooms.get(room, {}))
        return list(found.values())

    def _deliver(self, pending: dict[str, tuple[list[bytes], list[int | None]]], rooms: Iterable[str]) -> None:
        """Fan out now what this round published to `rooms` so far."""
        for room in rooms:
            if room in pending:
                self._fan_out(room, *pending.pop(room))

    def _fan_out(self, room: str, events: list[bytes], seqs: list[int | None]) -> None:
        members = self.rooms.get(room)
        if not members:
            return
        self._offer_all(members.values(), Batch(events, seqs))

    def _offer_all(self, conns: Iterable[Member], item: Batch | PingTick) -> None:
        """Offer `item` to each; one too slow (closed itself with 1013) or broken leaves its rooms."""
        gone, offered, slow = [], 0, 0
        for conn in conns:
            try:
                if conn.offer(item):
                    offered += 1
                else:
                    slow += 1
                    gone.append(conn)
            except Exception:  # a broken connection must not cost the others their events
                log.exception("%r: offer failed; removing it from its rooms", conn)
                gone.append(conn)
        if type(item) is Batch:
            self.stats.events_out += offered * len(item.events)
        self.stats.dropped_slow += slow
        for conn in gone:
            self._remove(conn)

    def _remove(self, conn: Member) -> None:
        for room in list(conn.rooms):
            self._leave(conn, room)

    def _leave(self, conn: Member, room: str) -> None:
        conn.rooms.discard(room)
        members = self.rooms.get(room)
        if members is not None:
            members.pop(conn.id, None)
            if not members:
                del self.rooms[room]
