"""SQLiteStore keeps every room's messages in one SQLite file in WAL mode, so several workers
on one machine can share it and a crash of the process loses nothing that was committed
(synchronous=NORMAL: a power cut may lose the last commits, a kill -9 does not). Each
process opens one connection; gevent never switches inside a sqlite3 call, so greenlets
take turns on it whole and need no lock (a transaction never spans a switch: nothing in
one blocks on gevent). Another process holding the write lock makes a write wait
(busy_timeout), which blocks this worker for as long: writes are short transactions.
A transaction costs far more than a row (on this machine 88 us an append alone, 17 us each
in sixteens), so the chat hands appends over in batches (`append_many`).

A room keeps its newest HISTORY_LIMIT messages, and up to PRUNE_EVERY more between prunes. A
room with no message for `idle` seconds (HISTORY_IDLE_DAYS) loses its history: the appends
look for such rooms once every FORGET_EVERY seconds (a scan of the index of rooms and ids).
Ids are SQLite's AUTOINCREMENT rowids, as strings: unique and increasing within a room,
never reused after pruning, the same for every process on the file. The file's epoch is made
with it: a new file (the old one deleted) starts its ids again under a new epoch.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..unavailable import Unavailable, unavailable_on
from . import Counted, History, Message, sender, within

# A locked file past busy_timeout, a full disk: the same call may work later.
_unavailable = unavailable_on("the message store (SQLite)", sqlite3.OperationalError)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    ts REAL NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    text TEXT NOT NULL,
    cid TEXT
);
CREATE INDEX IF NOT EXISTS messages_room_id ON messages (room, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Files made before cids were the sender's: `user_uid` and `sender` columns (NULL in old rows,
# which the unique index then never matches), and the index of the room's cids goes.
_SENDER_COLUMNS = """
ALTER TABLE messages ADD COLUMN user_uid TEXT;
ALTER TABLE messages ADD COLUMN sender TEXT;
DROP INDEX IF EXISTS messages_room_cid;
"""
# One message per cid of a sender in a room. Partial: a message without a cid (a bot's, a
# terminal's) has no entry to keep, and a store half as dear (an append 7 us, not 13-18: the
# full index's entries for NULL were still looked up and written). A file made with the full
# index loses it when a process opens it (below); a worker of the code before still on it (a
# reload's old workers, draining) is then refused each append (`unavailable`: the page resends).
_SENDER_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_room_sender_cid_set"
    " ON messages (room, sender, cid) WHERE cid IS NOT NULL"
)
_COLUMNS = "id, room, ts, user_id, user_name, user_uid, text, cid"


_INSERT = "INSERT INTO messages (room, ts, user_id, user_name, user_uid, text, cid, sender) VALUES {}"
# Rows with cids may be resends: those are not inserted, and RETURNING tells which were. Rows
# without are all inserted (the unique index holds no row without a cid), their ids in a run
# ending at the last one's: a plain INSERT, spared RETURNING's cost (a microbenchmark on this
# machine: 2.2 us a row against 3.1).
_INSERT_RESENDS = (
    _INSERT + " ON CONFLICT (room, sender, cid) WHERE cid IS NOT NULL DO NOTHING RETURNING id, room, sender, cid"
)
# Rows per INSERT: one statement of many rows costs SQLite and Python some 1.5 us a row less
# than a statement each (a microbenchmark on this machine: 2.4-2.7 us a row against 3.7-4.2
# in SQLite alone); each count of rows is a statement of its own, prepared once and cached.
INSERT_ROWS = 32
PRUNE_EVERY = 64  # a room is pruned back to HISTORY_LIMIT every this many appends (by one process)
FORGET_EVERY = 3600.0  # seconds between looks for idle rooms (by each process)


class SQLiteStore:
    def __init__(self, path: str, history_limit: int, idle: float = 0) -> None:
        """`idle`: seconds after its last message that a room's history goes (0: never)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.history_limit = history_limit
        self._idle = idle
        self._next_forget = 0.0  # time.monotonic() of the next look for idle rooms
        self._prune_every = min(PRUNE_EVERY, history_limit)
        self._appends: dict[str, int] = {}  # per room, since this process last pruned it
        self._inserts: dict[tuple[int, bool], str] = {}  # the INSERT of n rows, with or without RETURNING
        # The statement cache holds the INSERTs of 1 to INSERT_ROWS rows (with RETURNING and
        # without) and `counts`' of 1 to some 150 rooms beside the rest.
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=5.0, cached_statements=256
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        with self._transaction("BEGIN IMMEDIATE"):  # one process adds the columns, the others see them
            if "sender" not in {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}:
                for statement in filter(str.strip, _SENDER_COLUMNS.split(";")):
                    self._db.execute(statement)
            self._db.execute("DROP INDEX IF EXISTS messages_room_sender_cid")  # the full index of before
            self._db.execute(_SENDER_INDEX)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (secrets.token_hex(6),))
        self.publishes = False

    def append_many(self, items: list[tuple[str, Message]]) -> list[tuple[Message, bool] | Exception]:
        try:
            return self._insert_all(items)
        except Unavailable:
            raise
        except Exception as exc:  # rolled back; one bad message must not fail the others
            if len(items) == 1:
                return [exc]
            return [self.append_many([item])[0] for item in items]

    @_unavailable
    def _insert_all(self, items: list[tuple[str, Message]]) -> list[tuple[Message, bool]]:
        with self._transaction("BEGIN IMMEDIATE"):  # inserts and prunes, or none
            if self._idle and time.monotonic() >= self._next_forget:
                self._next_forget = time.monotonic() + min(FORGET_EVERY, self._idle)
                self.forget_idle(time.time() - self._idle)
            return [
                done for at in range(0, len(items), INSERT_ROWS) for done in self._insert(items[at : at + INSERT_ROWS])
            ]

    def forget_idle(self, before: float) -> int:
        """Delete the history of every room whose newest message is older than `before` (Unix
        seconds); how many rooms. In the caller's transaction."""
        idle = self._db.execute(  # each room's newest message, from the index of rooms and ids
            "SELECT room FROM messages WHERE id IN (SELECT max(id) FROM messages GROUP BY room) AND ts < ?", (before,)
        ).fetchall()
        self._db.executemany("DELETE FROM messages WHERE room = ?", idle)
        for (room,) in idle:
            self._appends.pop(room, None)
        return len(idle)

    def _insert(self, items: list[tuple[str, Message]]) -> list[tuple[Message, bool]]:
        """One INSERT of up to INSERT_ROWS rows; a row whose (room, sender, cid) is stored
        already is not inserted, and the stored one comes back instead (with RETURNING, only
        where a row has a cid)."""
        rows = [
            (
                room,
                m["ts"],
                m["user"]["id"],
                m["user"]["name"],
                m["user"].get("uid"),
                m["text"],
                m.get("cid"),
                sender(m),
            )
            for room, m in items
        ]
        resends = any(row[6] is not None for row in rows)
        sql = self._inserts.get((len(rows), resends))
        if sql is None:
            sql = (_INSERT_RESENDS if resends else _INSERT).format(", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows)))
            self._inserts[len(rows), resends] = sql
        cursor = self._db.execute(sql, [value for row in rows for value in row])
        if resends:
            done = self._resolved(rows, cursor.fetchall())
        else:  # each row's id is the largest yet plus one (AUTOINCREMENT), in VALUES order
            last = cursor.lastrowid
            if last is None or cursor.rowcount != len(rows):
                raise RuntimeError("an INSERT did not insert all its rows")
            done = [
                (_message((id_, *row[:7])), True)
                for id_, row in zip(range(last - len(rows) + 1, last + 1), rows, strict=True)
            ]
        for message, created in done:  # after the resends' lookups: a prune may take what they resend
            if created:
                self._pruned(message["room"])
        return done

    def _resolved(self, rows: list[tuple[Any, ...]], returned: list[tuple[Any, ...]]) -> list[tuple[Message, bool]]:
        """Each row of an INSERT with resends as its message, and whether it was inserted:
        those RETURNING gave, or else the stored one."""
        # RETURNING's rows come in no promised order, but the ids are given in the order of the
        # VALUES: the rows inserted, in order, have the ids returned, in order.
        ids = iter(sorted(id_ for id_, *_ in returned))
        inserted = {(room, by, cid) for _id, room, by, cid in returned if cid is not None}
        done: list[tuple[Message, bool]] = []
        for room, ts, user_id, user_name, user_uid, text, cid, by in rows:
            if cid is not None:
                if (room, by, cid) not in inserted:  # stored before, or earlier in this INSERT
                    row = self._db.execute(
                        f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND sender = ? AND cid = ?", (room, by, cid)
                    )
                    done.append((_message(row.fetchone()), False))
                    continue
                inserted.remove((room, by, cid))  # a second row with it in this INSERT was not inserted
            done.append((_message((next(ids), room, ts, user_id, user_name, user_uid, text, cid)), True))
        if inserted or next(ids, None) is not None:  # rows and ids that did not pair: refuse the batch
            raise RuntimeError("an INSERT's returned rows did not match its own")
        return done

    def _pruned(self, room: str) -> None:
        """Count an append to `room`, and prune it back to HISTORY_LIMIT every PRUNE_EVERY."""
        appends = self._appends.get(room, 0) + 1
        if appends >= self._prune_every:  # finding the cut costs a scan of HISTORY_LIMIT rows
            appends = 0
            self._db.execute(
                "DELETE FROM messages WHERE room = ? AND id <= "
                "(SELECT id FROM messages WHERE room = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (room, room, self.history_limit),
            )
        self._appends[room] = appends

    @_unavailable
    def read(self, room: str, since: int | None, epoch: str | None, limit: int, page: int | None = None) -> History:
        with self._transaction("BEGIN"):  # one snapshot: the checks and the rows agree
            (current,) = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            reset = since is not None and ((epoch is not None and epoch != current) or since > self._last_id())
            if since is not None and not reset:
                known = self._has(room, since)
                if known or page is not None:
                    # a page: the first that fit (paging on); all of them: the newest (catching up)
                    rows = self._db.execute(
                        f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND id > ?"
                        f" ORDER BY id{'' if page is not None else ' DESC'} LIMIT ?",
                        (room, since, -1 if page is None else page),
                    )
                    after, more = within(map(_message, rows))  # rows read as they are taken
                    return History(after if page is not None else after[::-1], current, not known, more=more)
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?", (room, max(limit, 0))
            )
            last, more = within(map(_message, rows))  # newest first
        return History(last[::-1], current, since is not None, reset, more)

    def _last_id(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return row[0] if row else 0

    def _has(self, room: str, id_: int) -> bool:
        return self._db.execute("SELECT 1 FROM messages WHERE room = ? AND id = ?", (room, id_)).fetchone() is not None

    @_unavailable
    def counts(self, rooms: list[str]) -> dict[str, int]:
        marks = ",".join("?" * len(rooms))
        rows = self._db.execute(
            f"SELECT room, COUNT(*), MAX(id) FROM messages WHERE room IN ({marks}) GROUP BY room", rooms
        )
        return {room: Counted(kept, last) for room, kept, last in rows.fetchall()}

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[None]:
        """One transaction (the connection is in autocommit mode, so none is implicit)."""
        self._db.execute(begin)
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


def _message(row: tuple[Any, ...]) -> Message:
    id_, room, ts, user_id, user_name, user_uid, text, cid = row
    user = {"id": user_id, "name": user_name}
    if user_uid is not None:
        user["uid"] = user_uid
    message = {"type": "message", "id": str(id_), "room": room, "user": user, "text": text, "ts": ts}
    if cid is not None:
        message["cid"] = cid
    return message
