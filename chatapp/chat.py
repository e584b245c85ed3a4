"""The chat, built only on the realtime layer's API (join, emit, handlers per event type).

Connect with `/ws?room=ROOM&name=NAME&since=ID`; the client gets `welcome` (with history),
the room gets `join`. A `message` is stored first (the store gives its id and drops a resend
of a cid the room holds), then emitted to the room; `typing` is relayed; a client that goes
away makes a `leave`.

Messages are stored by one greenlet per worker, the poster, which owns the order of this
worker's appends and emits:
- readers and HTTP posts put checked messages on its bounded queue; a reader that finds it
  full waits there, so a flood backs up into that client's TCP window;
- it takes everything queued in one go (up to POST_BATCH) and stores it with one
  `append_many` (one transaction or round trip: under load, most of a store's cost is per
  call, not per message), then emits each new message in id order;
- the sender of a resend gets the stored message back (its ack); a failure goes back as an
  `error` with the message's cid (or to the HTTP caller), and the next batch goes on;
- a client's `leave` goes through the same queue, so the room sees it after that client's
  last messages, never before.

Big rooms: past WELCOME_MEMBERS members, a room gets no `join` and `leave` per person (a
thousand people arriving would be a million events, and a log full of them). A join that
takes a room past WELCOME_MEMBERS is not told, nor is that person's leave (a leave is told
when its join was); instead the room's `member_count` comes in a `presence` event, from the
one worker that counts every room each presence beat (PRESENCE_TTL/4: `counted`), to the
room's clients on every worker, for every room of over COUNTED_FROM members. So a page's
count, from its welcome, the lines and the counts, is right again at each beat, either side
of the line.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.queue import Queue

from .config import Config
from .metrics import MESSAGES, STORE_SECONDS
from .ratelimit import KeyedRateLimiter, RateLimiter, address_key
from .realtime import Connection, ErrorCode, ProtocolError, Realtime, error_event, is_unicode
from .store import Message, Store
from .unavailable import Unavailable

log = logging.getLogger(__name__)

ROOM_RE = re.compile(r"[a-z0-9_-]{1,32}")
SINCE_RE = re.compile(r"[0-9]{1,18}")
# What people see must be what was meant (Trojan Source, names that look empty):
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # letters or symbols that show as blank
_NOT_IN_NAMES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})  # controls, surrogates, unassigned, line breaks
# Stripped from a message's text (str.translate: at C speed): control characters but newline
# and tab, and bidi controls.
_STRIP_FROM_TEXT = dict.fromkeys(
    [c for c in [*range(32), *range(0x7F, 0xA0)] if chr(c) not in "\n\t"] + [ord(c) for c in BIDI_CONTROLS]
)
EPOCH_RE = re.compile(r"[0-9a-f]{1,32}")
KEY_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
DEFAULT_ROOM = "lobby"
MAX_NAME = 32
MAX_CID = 64
RATE_WINDOW = 10.0  # RATE_LIMIT counts messages per this many seconds
TYPING_EVERY = 2.0  # at most one `typing` per client per this many seconds; more are dropped
WELCOME_MEMBERS = 100  # members listed in a welcome; member_count has them all (a big room is not N^2)
COUNTED_FROM = WELCOME_MEMBERS // 2  # rooms of more members are told their count each presence beat
POST_QUEUE = 1024  # messages checked but not yet stored; past this, senders wait
POST_BATCH = 256  # at most this many messages in one append_many
POST_WAIT = 30.0  # an HTTP post waits this long for its message to be stored


def parse_room(raw: str | None) -> str:
    """`room` of the protocol: 1-32 of a-z 0-9 _ -, folded to lower case; default lobby. ASCII
    before folding too (the Kelvin sign would fold to `k`)."""
    if raw is None or raw == "":
        return DEFAULT_ROOM
    room = raw.lower()
    if not (raw.isascii() and ROOM_RE.fullmatch(room)):
        raise ProtocolError(ErrorCode.BAD_PARAM, "room must be 1 to 32 of a-z, 0-9, _ and -")
    return room


def parse_name(raw: str | None, code: ErrorCode = ErrorCode.BAD_PARAM) -> str:
    """`name`: 1-32 characters after trimming, at least one of them visible, no control
    character, line break or bidi control; default guest- and a random suffix. `code`: the
    error's (a query parameter's bad_param, a JSON field's bad_field)."""
    if raw is None or raw.strip() == "":
        return "guest-" + secrets.token_hex(2)
    name = raw.strip()
    if len(name) <= MAX_NAME and name.isascii() and name.isprintable():  # most names: visible, nothing to refuse
        return name
    _check_unicode(name, "name", code)
    if len(name) > MAX_NAME or any(unicodedata.category(c) in _NOT_IN_NAMES or c in BIDI_CONTROLS for c in name):
        raise ProtocolError(code, f"name must be 1 to {MAX_NAME} characters, with no control or bidi characters")
    if not _visible(name):
        raise ProtocolError(code, "name must show at least one visible character")
    return name


def parse_since(raw: str | None) -> int | None:
    """`since`: the id of the last message the client saw, if any."""
    if raw is None or raw == "":
        return None
    if not SINCE_RE.fullmatch(raw):
        raise ProtocolError(ErrorCode.BAD_PARAM, "since must be a message id")
    return int(raw)


def parse_epoch(raw: str | None) -> str | None:
    """`epoch`: the `epoch` of the welcome that `since` came from, if the client kept it."""
    if raw is None or raw == "":
        return None
    if not EPOCH_RE.fullmatch(raw):
        raise ProtocolError(ErrorCode.BAD_PARAM, "epoch must be the epoch of an earlier welcome")
    return raw


def parse_key(raw: str | None) -> str | None:
    """`key`: a secret the client keeps across its connections (the page: in localStorage). Its
    public face, `uid` (a hash: the key cannot be found from it), is the sender's identity: the
    same person after a reconnect or a reload, and the scope of its cids. None without a key."""
    if raw is None or raw == "":
        return None
    if not KEY_RE.fullmatch(raw):
        raise ProtocolError(ErrorCode.BAD_PARAM, "key must be 16 to 64 of A-Z, a-z, 0-9, _ and -")
    return hashlib.sha256(b"chat-uid:" + raw.encode()).hexdigest()[:16]


def parse_message(event: dict[str, Any], max_chars: int) -> tuple[str, str | None]:
    """The text and cid of a `message` event (or of a bot's post), or ProtocolError."""
    text = event.get("text")
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, "a message needs a string field 'text'")
    text = _shown(text)
    if not text:
        raise ProtocolError(ErrorCode.EMPTY, "a message needs some visible text")
    if len(text) > max_chars:
        raise ProtocolError(ErrorCode.TOO_LONG, f"a message may hold at most {max_chars} characters")
    cid = event.get("cid")
    if cid is not None and not (isinstance(cid, str) and 0 < len(cid) <= MAX_CID):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"cid must be a string of 1 to {MAX_CID} characters")
    if cid is not None:
        _check_unicode(cid, "cid")
    return text, cid


def _shown(text: str) -> str:
    """A message's `text` as it is stored: without control characters (but newline and tab),
    bidi controls and the spaces around it; "" when nothing of it would show. Printable ASCII,
    most messages, takes a shortcut at C speed: it holds nothing to strip but spaces, and each
    of its other characters shows (1 us of a message's 20 at the ingest's peak)."""
    if text.isascii() and text.isprintable():
        return text.strip()
    _check_unicode(text, "text")
    text = text.translate(_STRIP_FROM_TEXT).strip()
    return text if _visible(text) else ""


def _check_unicode(value: str, field: str, code: ErrorCode = ErrorCode.BAD_FIELD) -> None:
    """Refuse a lone surrogate here (is_unicode), before it fails the store or the encoder."""
    if not is_unicode(value):
        raise ProtocolError(code, f"{field} must be valid Unicode (no lone surrogates)")


def _visible(text: str) -> bool:
    """Whether `text` shows something: a letter, digit, punctuation or symbol that is not one of
    the blank fillers (marks, spaces, zero-width and format characters show nothing alone)."""
    return any(unicodedata.category(c)[0] in "LNPS" and c not in FILLERS for c in text)


@dataclass(slots=True)
class _Post:
    room: str
    fields: dict[str, Any]
    conn: Connection | None = None  # a client's message: its ack or error goes to it
    result: AsyncResult | None = None  # an HTTP post: it waits for this


class Chat:
    """The chat's rules over a Realtime and a Store; kept in app.extensions["chat"]."""

    def __init__(self, rt: Realtime, store: Store, config: Config) -> None:
        self.rt = rt
        self.store = store
        self.config = config
        self._posts: Queue = Queue(POST_QUEUE)
        self._poster: gevent.Greenlet | None = None
        # Limits per client address, which a reconnect does not reset (this worker's counts).
        limit = self.config.address_rate_limit
        self._per_address = KeyedRateLimiter(limit, RATE_WINDOW) if limit else None
        limit = self.config.announce_limit
        self._announced = KeyedRateLimiter(limit, RATE_WINDOW) if limit else None
        rt.on_connect(self.connect)
        rt.on_disconnect(self.disconnect)
        rt.on("message")(self.message)
        rt.on("typing")(self.typing)
        rt.on_presence_expired(self.member_left)
        rt.on_presence_restored(self.member_back)
        rt.on_presence_counted(self.counted)
        rt.serve_text(parse=lambda line: {"type": "message", "text": line}, render=as_text)

    def post(self, room: str, user: dict[str, str], text: str, cid: str | None) -> tuple[Message, bool]:
        """Store a message, then emit it to the room, and wait for that. A resend (a cid the
        room holds) is not stored or emitted again: returns the stored one and False."""
        result: AsyncResult = AsyncResult()
        self._enqueue(_Post(room, _fields(user, text, cid), result=result))
        try:
            return result.get(timeout=POST_WAIT)
        except gevent.Timeout:
            raise Unavailable("the message store did not answer in time") from None

    def _enqueue(self, item: _Post | Callable[[], None]) -> None:
        """Queue a message for the poster, or an action to run once what is ahead of it is out."""
        if self._poster is None:  # started in the worker, by its first message
            self._poster = gevent.spawn(self._post_loop)
        self._posts.put(item)

    def _post_loop(self) -> None:
        """The poster greenlet (see the module's docstring)."""
        while True:
            items = [self._posts.get()]
            while len(items) < POST_BATCH and not self._posts.empty():
                items.append(self._posts.get_nowait())
            batch: list[_Post] = []  # messages in a row are stored together
            for item in [*items, None]:
                if isinstance(item, _Post):
                    batch.append(item)
                    continue
                if batch:
                    posts, batch = batch, []
                    _guarded(self._store, posts)
                if item is not None:
                    _guarded(item)

    def _store(self, batch: list[_Post]) -> None:
        try:
            with STORE_SECONDS.time():
                stored = self.store.append_many([(post.room, post.fields) for post in batch])
        except Unavailable as exc:
            for post in batch:
                _fail(post, Unavailable(str(exc)), ErrorCode.UNAVAILABLE, str(exc))
            return
        except Exception:  # a bug: fail the batch, every sender told, rather than leave them waiting
            log.exception("storing a batch of %d messages failed", len(batch))
            for post in batch:
                _fail(post, RuntimeError("the message could not be stored"), ErrorCode.INTERNAL, "not stored")
            return
        MESSAGES.inc(sum(1 for result in stored if not isinstance(result, Exception) and result[1]))
        for post, result in zip(batch, stored, strict=True):
            if isinstance(result, Unavailable):  # its room's part of the store is away (a failover)
                _fail(post, result, ErrorCode.UNAVAILABLE, str(result))
                continue
            if isinstance(result, Exception):  # this message alone was refused
                log.error("storing a message in %r failed: %r", post.room, result)
                _fail(post, result, ErrorCode.INTERNAL, "the message could not be stored")
                continue
            message, created = result
            if created and not self.store.publishes:  # else the store published it as it stored it
                try:
                    self.rt.emit(post.room, message, seq=int(message["id"]))
                except Unavailable:  # stored: clients get it when they resume
                    log.warning("message %s stored but not emitted: the backplane is down", message["id"])
                except Exception:  # as above; and the rest of the batch still goes out
                    log.exception("message %s stored but not emitted", message["id"])
            if post.result is not None:
                post.result.set((message, created))
            elif not created and post.conn is not None:
                post.conn.send(message)  # the ack of a resend: the sender learns it is stored

    # -- realtime handlers --------------------------------------------------------------------
    def connect(self, conn: Connection) -> None:
        room = parse_room(conn.args.get("room"))
        name = parse_name(conn.args.get("name"))
        since = parse_since(conn.args.get("since"))
        epoch = parse_epoch(conn.args.get("epoch"))
        uid = parse_key(conn.args.get("key"))
        conn.info = {"id": conn.id, "name": name}  # the `user` of its events
        if uid is not None:
            conn.info["uid"] = uid
        conn.data.update(
            room=room,
            messages=RateLimiter(self.config.rate_limit, RATE_WINDOW),
            typing=RateLimiter(1, TYPING_EVERY),
            # its join and leave are told, unless its address comes and goes too often (a storm
            # of reconnects must not fill the room with lines) or the room is big (below); a
            # leave only if the join was
            announced=self._announced is None or self._announced.allow(address_key(conn.remote_addr)),
        )
        self.rt.join(conn, room)
        # Joined first, history second: nothing falls between the two. A message stored
        # before the read but still on its way to the Hub would come twice; skip_through
        # drops it from the live stream.
        history = self.store.read(room, since, epoch, self.config.history_on_join)  # READ_BYTES at most
        messages = history.messages
        seen = int(messages[-1]["id"]) if messages else (None if history.truncated else since)
        if seen is not None:
            conn.skip_through(seen)
        members, count = self.rt.members(room, WELCOME_MEMBERS)  # on every worker, this one included
        conn.data["announced"] = conn.data["announced"] and count <= WELCOME_MEMBERS  # big: counted
        conn.send(
            {
                "type": "welcome",
                "you": conn.info,
                "room": room,
                "members": members,
                "member_count": count,
                "history": messages,
                "truncated": history.truncated,
                "more": history.more,
                "epoch": history.epoch,
                "reset": history.reset,
            }
        )
        if conn.data["announced"]:
            self._tell("join", room, conn.info)

    def disconnect(self, conn: Connection) -> None:
        if conn.data["announced"]:  # after its messages
            self._enqueue(partial(self._tell, "leave", conn.data["room"], conn.info))

    def member_left(self, room: str, user: dict[str, Any], members: int) -> None:
        """A member vanished with its worker (presence expiry, on the worker that sweeps): told
        unless the room was big with it (its join was not told then; the count tells).
        `members`: those left after the sweep, which reports them all without asking again."""
        if members < WELCOME_MEMBERS:
            self._tell("leave", room, user)

    def member_back(self, room: str, user: dict[str, Any], members: int) -> None:
        """A member taken for gone (its `leave` told) was there after all: the room is told,
        as of a join."""
        if members <= WELCOME_MEMBERS:
            self._tell("join", room, user)

    def _tell(self, kind: str, room: str, user: dict[str, Any]) -> None:
        self.rt.emit(room, {"type": kind, "room": room, "user": user, "ts": time.time()})

    def counted(self, counts: dict[str, int]) -> None:
        """Presence's count of every room (each beat, on the one worker that counts for all):
        each room of over COUNTED_FROM members is told its count, on every worker, whether or
        not it changed. Stateless on purpose: a page's count, moved by lines between two
        counts (a leave whose join was told), is set right at the next one, whichever worker
        counts by then; and a room that went past WELCOME_MEMBERS and back between two beats
        (its silent joins and leaves) is told all the same."""
        for room, count in counts.items():
            if count > COUNTED_FROM:
                self.rt.emit(room, {"type": "presence", "room": room, "member_count": count})

    def message(self, conn: Connection, event: dict[str, Any]) -> None:
        text, cid = parse_message(event, self.config.max_message_chars)
        if not conn.data["messages"].allow():
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, f"at most {self.config.rate_limit} messages per {RATE_WINDOW:.0f} s"
            )
        if self._per_address is not None and not self._per_address.allow(address_key(conn.remote_addr)):
            limit = self.config.address_rate_limit
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, f"at most {limit} messages per {RATE_WINDOW:.0f} s from one address"
            )
        self._enqueue(_Post(conn.data["room"], _fields(conn.info, text, cid), conn=conn))

    def typing(self, conn: Connection, event: dict[str, Any]) -> None:
        if conn.data["typing"].allow():
            room = conn.data["room"]
            self.rt.emit(room, {"type": "typing", "room": room, "user": conn.info})


def as_text(event: dict[str, Any]) -> str | None:
    """An event as the plain-text endpoint (/ws/text) shows it: lines as a terminal or the seed's
    page shows them, `alice: hello`, `* bob joined`; None for what it does not show (typing)."""
    kind = event.get("type")
    if kind == "message":  # its own lines indented: a line of it cannot pass for another event
        return f"{event['user']['name']}: " + event["text"].replace("\n", "\n  ")
    if kind == "join":
        return f"* {event['user']['name']} joined"
    if kind == "leave":
        return f"* {event['user']['name']} left"
    if kind == "welcome":
        here = f"* you are {event['you']['name']} in #{event['room']}, {event['member_count']} here"
        return "\n".join([here, *(as_text(message) or "" for message in event["history"])])
    if kind == "presence":
        return f"* {event['member_count']} here"
    if kind == "error":
        return f"! {event['detail'] or event['code']}"
    return None


def _fields(user: dict[str, str], text: str, cid: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"ts": time.time(), "user": user, "text": text}
    if cid is not None:
        fields["cid"] = cid
    return fields


def _guarded(action: Callable[..., None], *args: Any) -> None:
    try:
        action(*args)
    except Exception:  # the poster must live on: a dead one would swallow every message
        log.exception("the poster failed in %r", action)


def _fail(post: _Post, exc: Exception, code: ErrorCode, detail: str) -> None:
    if post.result is not None:
        post.result.set_exception(exc)
    elif post.conn is not None:
        post.conn.send(error_event(code, detail, post.fields.get("cid")))
