"""Message history: ids come from here, never from one worker's memory.

SQLiteStore keeps every room's messages in one SQLite file in WAL mode, so several workers
on one machine can share it and a crash loses nothing that was committed. Each process opens
one connection; gevent never switches inside a sqlite3 call, so greenlets take turns on it
whole and need no lock.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Protocol

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
"""


class Store(Protocol):
    def append(self, room: str, message: dict[str, Any]) -> dict[str, Any]: ...

    def recent(self, room: str, limit: int) -> list[dict[str, Any]]: ...


class SQLiteStore:
    def __init__(self, path: str, history_limit: int) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.history_limit = history_limit
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a process crash loses nothing committed
        self._db.executescript(_SCHEMA)

    def append(self, room: str, message: dict[str, Any]) -> dict[str, Any]:
        """Store a message ({ts, user: {id, name}, text, cid?}); return it with its id and room."""
        user = message["user"]
        cursor = self._db.execute(
            "INSERT INTO messages (room, ts, user_id, user_name, text, cid) VALUES (?, ?, ?, ?, ?, ?)",
            (room, message["ts"], user["id"], user["name"], message["text"], message.get("cid")),
        )
        return {"type": "message", "id": str(cursor.lastrowid), "room": room, **message}

    def recent(self, room: str, limit: int) -> list[dict[str, Any]]:
        """The last `limit` messages of `room`, oldest first."""
        rows = self._db.execute(
            "SELECT id, ts, user_id, user_name, text, cid FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?",
            (room, limit),
        ).fetchall()
        return [_message(room, row) for row in reversed(rows)]

    def close(self) -> None:
        self._db.close()


def _message(room: str, row: tuple[Any, ...]) -> dict[str, Any]:
    id_, ts, user_id, user_name, text, cid = row
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
