"""The chat's input rules, and the rate limiter they use (no sockets)."""

from __future__ import annotations

import json
import sqlite3

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatapp.chat import (
    _STRIP_FROM_TEXT,
    COUNTED_FROM,
    WELCOME_MEMBERS,
    Chat,
    _shown,
    _visible,
    as_text,
    parse_message,
    parse_name,
    parse_room,
)
from chatapp.config import Config
from chatapp.ratelimit import KeyedRateLimiter, RateLimiter, address_key
from chatapp.realtime import Realtime
from chatapp.realtime.client import Connection
from chatapp.realtime.protocol import ErrorCode, ProtocolError
from chatapp.store import recent
from chatapp.store.sqlite import SQLiteStore


@pytest.mark.parametrize(
    ("raw", "room"), [(None, "lobby"), ("", "lobby"), ("Dev-Ops_2", "dev-ops_2"), ("a" * 32, "a" * 32)]
)
def test_room_accepted(raw: str | None, room: str) -> None:
    assert parse_room(raw) == room


@pytest.mark.parametrize("raw", ["a" * 33, "has space", "dot.ted", "ünï", "../x", "\u212aitchen"])
def test_room_refused(raw: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_room(raw)
    assert info.value.code == ErrorCode.BAD_PARAM


def test_name_trimmed_or_defaulted() -> None:
    assert parse_name("  Zoë 🎉 ") == "Zoë 🎉"
    assert parse_name(None).startswith("guest-") and parse_name("   ").startswith("guest-")


@pytest.mark.parametrize(
    "raw",
    [
        "x" * 33,
        "bell\x07",
        "new\nline",
        "tab\tbed",
        "\u3164",  # a Hangul filler: a letter that shows nothing
        "\u200b\u200d",  # zero-width only
        "\u0301\u0308",  # combining marks only
        "\u2800 \u2800",  # Braille blanks
        "evil\u202egpj.exe",  # a bidi override
        "lone \ud800",  # a lone surrogate
    ],
)
def test_name_refused(raw: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_name(raw)
    assert info.value.code == ErrorCode.BAD_PARAM
    with pytest.raises(ProtocolError) as info:
        parse_name(raw, ErrorCode.BAD_FIELD)  # a JSON field's (the bot API's)
    assert info.value.code == ErrorCode.BAD_FIELD


def test_names_with_emoji_sequences_are_names() -> None:
    assert parse_name("👨\u200d👩\u200d👧 fam") == "👨\u200d👩\u200d👧 fam"


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"type": "message"}, ErrorCode.BAD_FIELD),
        ({"type": "message", "text": 5}, ErrorCode.BAD_FIELD),
        ({"type": "message", "text": "   "}, ErrorCode.EMPTY),
        ({"type": "message", "text": "x" * 11}, ErrorCode.TOO_LONG),
        ({"type": "message", "text": "ok", "cid": ""}, ErrorCode.BAD_FIELD),
        ({"type": "message", "text": "ok", "cid": "c" * 65}, ErrorCode.BAD_FIELD),
        ({"type": "message", "text": "\u200b\u3164\u2800\u0301"}, ErrorCode.EMPTY),  # nothing visible
        ({"type": "message", "text": "\x07\u202e"}, ErrorCode.EMPTY),  # nothing left once stripped
        ({"type": "message", "text": "a\ud800"}, ErrorCode.BAD_FIELD),
        ({"type": "message", "text": "ok", "cid": "\udfff"}, ErrorCode.BAD_FIELD),
    ],
)
def test_message_refused(event: dict, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(event, max_chars=10)
    assert info.value.code == code


def test_message_trimmed_with_cid() -> None:
    assert parse_message({"type": "message", "text": " hi\nthere ", "cid": "k1"}, 10) == ("hi\nthere", "k1")


def test_control_and_bidi_characters_are_stripped_from_messages() -> None:
    """Newlines and tabs stay; other controls (a bell, a carriage return) and bidi controls
    (which can make text read other than it is) go."""
    text, _ = parse_message({"type": "message", "text": "a\x07b\r\nc\td\u202eevil\u2066"}, 100)
    assert text == "ab\nc\tdevil"


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text())
def test_a_messages_text_is_what_the_long_way_makes_of_it_shortcut_or_not(text: str) -> None:
    """Printable ASCII takes a shortcut (_shown): it must come out as the long way has it."""
    long_way = text.translate(_STRIP_FROM_TEXT).strip()
    assert _shown(text) == (long_way if _visible(long_way) else "")


def test_rate_limiter_allows_a_burst_then_refills() -> None:
    limiter = RateLimiter(3, 10.0)
    start = limiter._last
    assert [limiter.allow(start) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(start + 3.4)  # 10 s / 3 per token
    assert not limiter.allow(start + 3.4)


def test_keyed_rate_limiter_holds_per_key_and_forgets_refilled_keys() -> None:
    limiter = KeyedRateLimiter(2, 10.0, max_keys=3)
    now = 1000.0
    assert [limiter.allow("a", now) for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", now) and limiter.allow("c", now)
    assert len(limiter) == 3
    assert limiter.allow("d", now + 11)  # a fourth key: the refilled ones (all) are forgotten first
    assert len(limiter) == 1
    assert [limiter.allow("a", now + 11) for _ in range(3)] == [True, True, False]  # "a" anew, not unlimited


@pytest.fixture
def chat(tmp_path):
    """A Chat on a real Realtime (its Hub running, in memory) and a real SQLite file."""
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), 100)
    rt = Realtime(Config(address_rate_limit=0, announce_limit=0))  # its connections share one address
    rt.start()
    chat = Chat(rt, store, rt.config)
    yield chat
    gevent.killall([g for g in (chat._poster,) if g is not None], timeout=5)
    rt.stop()
    store.close()


def socketless(chat: Chat, room: str, name: str = "x") -> Connection:
    """A registered connection without a socket: it stays CONNECTING, holding what it is sent."""
    conn = Connection(None, None, chat.config, {"room": room, "name": name}, "test")  # type: ignore[arg-type]
    chat.rt._hub.register(conn)  # as a session does
    return conn


def member(chat: Chat, room: str) -> Connection:
    """A member of `room` put there by the realtime layer alone (no chat join)."""
    conn = socketless(chat, room)
    chat.rt.join(conn, room)
    return conn


def test_posts_that_arrive_together_share_one_commit_and_go_out_in_id_order(chat: Chat) -> None:
    conn = member(chat, "r")
    commits: list[str] = []
    chat.store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    user = {"id": "c1", "name": "ann"}
    jobs = [gevent.spawn(chat.post, "r", user, f"m{i}", None) for i in range(10)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert len(commits) == 1
    member(chat, "other")  # the Hub takes commands in order: every publish before this is done
    seqs = [seq for batch in conn._held_offered for seq in batch.seqs]
    assert seqs == sorted(seqs) and len(seqs) == 10
    assert sorted(int(job.value[0]["id"]) for job in jobs) == seqs


def test_a_post_the_store_refuses_fails_alone(chat: Chat) -> None:
    user = {"id": "c1", "name": "ann"}
    jobs = [gevent.spawn(chat.post, "r", user, text, None) for text in ("one", None, "three")]  # NULL text
    gevent.joinall(jobs, timeout=10)
    assert jobs[0].successful() and jobs[2].successful()
    assert isinstance(jobs[1].exception, sqlite3.IntegrityError)
    assert [m["text"] for m in recent(chat.store, "r", 10)] == ["one", "three"]


def test_a_leave_comes_after_the_leavers_last_messages(chat: Chat) -> None:
    watcher = member(chat, "r")
    ann = joiner(chat, "r", "ann")
    for i in range(3):
        chat.message(ann, {"type": "message", "text": f"m{i}"})
    chat.disconnect(ann)
    chat.post("r", {"id": "bot:b", "name": "b"}, "after", None)  # queued behind the leave: it is out
    member(chat, "other")  # and the Hub has fanned out all of it
    events = [json.loads(e) for batch in watcher._held_offered for e in batch.events]
    assert [(e["type"], e.get("text")) for e in events] == [
        ("join", None),
        ("message", "m0"),
        ("message", "m1"),
        ("message", "m2"),
        ("leave", None),
        ("message", "after"),
    ]


def test_a_welcome_lists_some_members_of_a_big_room_and_counts_them_all(chat: Chat) -> None:
    joined = [member(chat, "big") for _ in range(WELCOME_MEMBERS + 2)]
    late = joiner(chat, "big", "late")
    welcome = json.loads(late._held_sent[0].events[0])
    assert welcome["member_count"] == len(joined) + 1
    assert [m["id"] for m in welcome["members"]] == [conn.id for conn in joined[:WELCOME_MEMBERS]]


def joiner(chat: Chat, room: str, name: str) -> Connection:
    """A client that came in through the chat's connect handler."""
    conn = socketless(chat, room, name)
    chat.connect(conn)
    return conn


def test_a_big_room_gets_member_counts_instead_of_each_join_and_leave(chat: Chat) -> None:
    """Past WELCOME_MEMBERS a join is not told, nor that person's leave; presence's count of
    every room (one worker's, each beat) tells the room its count instead. A leave whose join
    was told is told."""
    watcher = joiner(chat, "big", "watcher")
    crowd = [joiner(chat, "big", f"m{i}") for i in range(WELCOME_MEMBERS + 1)]  # two past the line
    chat.counted(chat.rt.rooms())  # presence's beat: 102
    for conn in (crowd[0], crowd[-1]):  # a join told, and one not
        chat.rt._hub.unregister(conn)
        chat.disconnect(conn)
    member(chat, "sync")  # the Hub has taken them out
    chat.counted(chat.rt.rooms())  # 100
    chat.post("big", {"id": "bot:b", "name": "b"}, "after", None)  # behind the leaves in the poster
    member(chat, "other")  # the Hub is through with all of it
    events = [json.loads(e) for batch in watcher._held_offered for e in batch.events]
    joins = [e["user"]["name"] for e in events if e["type"] == "join"]
    assert joins == ["watcher", *(f"m{i}" for i in range(WELCOME_MEMBERS - 1))]  # the 101st made it big
    assert [e["user"]["name"] for e in events if e["type"] == "leave"] == ["m0"]
    assert [e["member_count"] for e in events if e["type"] == "presence"] == [WELCOME_MEMBERS + 2, WELCOME_MEMBERS]


def test_each_beat_every_room_past_counted_from_is_told_its_count(chat: Chat) -> None:
    """Whether or not it changed, and however its members came (through this worker or
    another, while it was small or big): a page's count moved by lines is set right at each
    beat, and so is one left behind by a room that went past the line and back between two
    beats. A room of COUNTED_FROM or fewer is not counted: its lines tell it all."""
    watcher = member(chat, "grew")
    for _ in range(COUNTED_FROM):
        member(chat, "grew")
    small = member(chat, "small")
    for _ in range(COUNTED_FROM - 1):
        member(chat, "small")
    chat.counted(chat.rt.rooms())
    chat.counted(chat.rt.rooms())  # unchanged: told all the same
    member(chat, "sync")
    events = [json.loads(e) for batch in watcher._held_offered for e in batch.events]
    assert events == [{"type": "presence", "room": "grew", "member_count": COUNTED_FROM + 1}] * 2
    assert not small._held_offered


def test_an_ipv6_client_is_counted_by_its_64_and_an_ipv4_one_seen_as_ipv6_by_its_address() -> None:
    """A host or home network has a whole /64: a new address per connection must not reset the
    per-address limits."""
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("203.0.113.7") == "203.0.113.7" and address_key("") == ""
    # An IPv4 client seen as IPv6 (gunicorn bound to [::]) is its IPv4 address, not ::/64 with all of them
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7" != address_key("::ffff:198.51.100.9")


def test_a_plain_text_line_of_a_message_cannot_pass_for_another_event() -> None:
    forged = {"type": "message", "user": {"id": "c1", "name": "eve"}, "text": "hi\n* admin joined"}
    assert as_text(forged) == "eve: hi\n  * admin joined"
    assert as_text({"type": "typing", "user": {"id": "c1", "name": "eve"}}) is None
