"""The chat, built only on the realtime layer's API (join, emit, handlers per event type).

Connect with `/ws?room=ROOM&name=NAME`; the client gets `welcome`, the room gets `join`.
`message` events are stored (the store gives the id) and then emitted to the room; `typing`
is relayed; a client that goes away makes a `leave`.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from .client import Connection
from .protocol import ErrorCode, ProtocolError
from .ratelimit import RateLimiter
from .realtime import Realtime
from .store import Store

ROOM_RE = re.compile(r"[a-z0-9_-]{1,32}")
DEFAULT_ROOM = "lobby"
MAX_NAME = 32
MAX_CID = 64
RATE_WINDOW = 10.0  # RATE_LIMIT counts messages per this many seconds
TYPING_EVERY = 2.0  # at most one `typing` per client per this many seconds; more are dropped


def parse_room(raw: str | None) -> str:
    """`room` of the protocol: 1-32 of a-z 0-9 _ -, folded to lower case; default lobby."""
    if raw is None or raw == "":
        return DEFAULT_ROOM
    room = raw.lower()
    if not ROOM_RE.fullmatch(room):
        raise ProtocolError(ErrorCode.BAD_PARAM, "room must be 1 to 32 of a-z, 0-9, _ and -")
    return room


def parse_name(raw: str | None) -> str:
    """`name`: 1-32 printable characters after trimming; default guest- and a random suffix."""
    if raw is None or raw.strip() == "":
        return "guest-" + secrets.token_hex(2)
    name = raw.strip()
    if len(name) > MAX_NAME or not name.isprintable():
        raise ProtocolError(ErrorCode.BAD_PARAM, f"name must be 1 to {MAX_NAME} printable characters")
    return name


def parse_message(event: dict[str, Any], max_chars: int) -> tuple[str, str | None]:
    """The text and cid of a client `message` event, or ProtocolError."""
    text = event.get("text")
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, "a message needs a string field 'text'")
    text = text.strip()
    if not text:
        raise ProtocolError(ErrorCode.EMPTY, "a message needs some text")
    if len(text) > max_chars:
        raise ProtocolError(ErrorCode.TOO_LONG, f"a message may hold at most {max_chars} characters")
    cid = event.get("cid")
    if cid is not None and not (isinstance(cid, str) and 0 < len(cid) <= MAX_CID):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"cid must be a string of 1 to {MAX_CID} characters")
    return text, cid


def user_of(conn: Connection) -> dict[str, str]:
    return {"id": conn.id, "name": conn.data["name"]}


def init_chat(rt: Realtime, store: Store) -> None:
    config = rt.config

    @rt.on_connect
    def connect(conn: Connection) -> None:
        room = parse_room(conn.args.get("room"))
        name = parse_name(conn.args.get("name"))
        conn.data.update(
            name=name,
            room=room,
            messages=RateLimiter(config.rate_limit, RATE_WINDOW),
            typing=RateLimiter(1, TYPING_EVERY),
        )
        rt.join(conn, room)
        # members: this worker's clients in the room, this one included
        members = [user_of(member) for member in rt.members(room)]
        conn.send(
            {
                "type": "welcome",
                "you": user_of(conn),
                "room": room,
                "members": members,
                "history": store.recent(room, config.history_on_join),
                "truncated": False,
            }
        )
        rt.emit(room, {"type": "join", "room": room, "user": user_of(conn), "ts": time.time()})

    @rt.on_disconnect
    def disconnect(conn: Connection) -> None:
        room = conn.data["room"]
        rt.emit(room, {"type": "leave", "room": room, "user": user_of(conn), "ts": time.time()})

    @rt.on("message")
    def message(conn: Connection, event: dict[str, Any]) -> None:
        text, cid = parse_message(event, config.max_message_chars)
        if not conn.data["messages"].allow():
            raise ProtocolError(ErrorCode.RATE_LIMITED, f"at most {config.rate_limit} messages per {RATE_WINDOW:.0f} s")
        room = conn.data["room"]
        fields: dict[str, Any] = {"ts": time.time(), "user": user_of(conn), "text": text}
        if cid is not None:
            fields["cid"] = cid
        rt.emit(room, store.append(room, fields))

    @rt.on("typing")
    def typing(conn: Connection, event: dict[str, Any]) -> None:
        if conn.data["typing"].allow():
            room = conn.data["room"]
            rt.emit(room, {"type": "typing", "room": room, "user": user_of(conn)})
