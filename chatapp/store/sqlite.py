"""SQLiteStore keeps every room's messages in one SQLite file in WAL mode, so several workers
on one machine can share it and a crash of the process loses nothing that was committed
(synchronous=NORMAL: a power cut may lose the last commits, a kill -9 does not). Each
process opens one connection; gevent never switches inside a sqlite3 call, so greenlets
take turns on it whole and need no lock (a transaction never spans a switch: nothing in
one blocks on gevent). Another process holding the write lock makes a write wait
(busy_timeout), which blocks this worker for as long: writes are short transactions.
A transaction costs far more than a row (on this machine 88 us an append alone, 17 us each
in sixteens), so the chat hands appends over in batches (`append_many`).

A room keeps its newest HISTORY_LIMIT messages, and up to PRUNE_EVERY more between prunes.
Ids are SQLite's AUTOINCREMENT rowids, as strings: unique and increasing within a room,
never reused after pruning, the same for every process on the file. The file's epoch is made
with it: a new file (the old one deleted) starts its ids again under a new epoch.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..unavailable import Unavailable, unavailable_on
from . import History, Message

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
CREATE UNIQUE INDEX IF NOT EXISTS messages_room_cid ON messages (room, cid);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "id, room, ts, user_id, user_name, text, cid"


PRUNE_EVERY = 64  # a room is pruned back to HISTORY_LIMIT every this many appends (by one process)


class SQLiteStore:
    def __init__(self, path: str, history_limit: int) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.history_limit = history_limit
        self._prune_every = min(PRUNE_EVERY, history_limit)
        self._appends: dict[str, int] = {}  # per room, since this process last pruned it
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
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
            return [self._insert(room, message) for room, message in items]

    def _insert(self, room: str, message: Message) -> tuple[Message, bool]:
        user, cid = message["user"], message.get("cid")
        cursor = self._db.execute(
            "INSERT INTO messages (room, ts, user_id, user_name, text, cid) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (room, cid) DO NOTHING",
            (room, message["ts"], user["id"], user["name"], message["text"], cid),
        )
        if cursor.rowcount == 0:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND cid = ?", (room, cid))
            return _message(row.fetchone()), False
        appends = self._appends.get(room, 0) + 1
        if appends >= self._prune_every:  # finding the cut costs a scan of HISTORY_LIMIT rows
            appends = 0
            self._db.execute(
                "DELETE FROM messages WHERE room = ? AND id <= "
                "(SELECT id FROM messages WHERE room = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (room, room, self.history_limit),
            )
        self._appends[room] = appends
        return _message((cursor.lastrowid, room, message["ts"], user["id"], user["name"], message["text"], cid)), True

    @_unavailable
    def read(self, room: str, since: int | None, epoch: str | None, limit: int, page: int | None = None) -> History:
        with self._transaction("BEGIN"):  # one snapshot: the checks and the rows agree
            (current,) = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            reset = since is not None and ((epoch is not None and epoch != current) or since > self._last_id())
            if since is not None and not reset:
                known = self._has(room, since)
                if known or page is not None:
                    rows = self._db.execute(
                        f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND id > ? ORDER BY id LIMIT ?",
                        (room, since, -1 if page is None else page),
                    ).fetchall()
                    return History([_message(row) for row in rows], current, truncated=not known)
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?", (room, max(limit, 0))
            ).fetchall()
        return History([_message(row) for row in reversed(rows)], current, since is not None, reset)

    def _last_id(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return row[0] if row else 0

    def _has(self, room: str, id_: int) -> bool:
        return self._db.execute("SELECT 1 FROM messages WHERE room = ? AND id = ?", (room, id_)).fetchone() is not None

    @_unavailable
    def counts(self, rooms: list[str]) -> dict[str, int]:
        marks = ",".join("?" * len(rooms))
        rows = self._db.execute(f"SELECT room, COUNT(*) FROM messages WHERE room IN ({marks}) GROUP BY room", rooms)
        return dict(rows.fetchall())

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
    id_, room, ts, user_id, user_name, text, cid = row
    message = {
        "type": "message",
        "id": str(id_),
        "room": room,
        "user": {"id": user_id, "name": user_name},
        "text": text,
        "ts": ts,
    }
    if cid is not None:
        message["cid"] = cid
    return message
