"""The chat's input rules, and the rate limiter they use (no sockets)."""

from __future__ import annotations

import pytest

from chatapp.chat import parse_message, parse_name, parse_room
from chatapp.protocol import ErrorCode, ProtocolError
from chatapp.ratelimit import RateLimiter


@pytest.mark.parametrize(
    ("raw", "room"), [(None, "lobby"), ("", "lobby"), ("Dev-Ops_2", "dev-ops_2"), ("a" * 32, "a" * 32)]
)
def test_room_accepted(raw: str | None, room: str) -> None:
    assert parse_room(raw) == room


@pytest.mark.parametrize("raw", ["a" * 33, "has space", "dot.ted", "ünï", "../x"])
def test_room_refused(raw: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_room(raw)
    assert info.value.code == ErrorCode.BAD_PARAM


def test_name_trimmed_or_defaulted() -> None:
    assert parse_name("  Zoë 🎉 ") == "Zoë 🎉"
    assert parse_name(None).startswith("guest-") and parse_name("   ").startswith("guest-")


@pytest.mark.parametrize("raw", ["x" * 33, "bell\x07", "new\nline", "tab\tbed"])
def test_name_refused(raw: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_name(raw)
    assert info.value.code == ErrorCode.BAD_PARAM


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"type": "message"}, ErrorCode.BAD_FIELD),
        ({"type": "message", "text": 5}, ErrorCode.BAD_FIELD),
        ({"type": "message", "text": "   "}, ErrorCode.EMPTY),
        ({"type": "message", "text": "x" * 11}, ErrorCode.TOO_LONG),
        ({"type": "message", "text": "ok", "cid": ""}, ErrorCode.BAD_FIELD),
        ({"type": "message", "text": "ok", "cid": "c" * 65}, ErrorCode.BAD_FIELD),
    ],
)
def test_message_refused(event: dict, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(event, max_chars=10)
    assert info.value.code == code


def test_message_trimmed_with_cid() -> None:
    assert parse_message({"type": "message", "text": " hi\nthere ", "cid": "k1"}, 10) == ("hi\nthere", "k1")


def test_rate_limiter_allows_a_burst_then_refills() -> None:
    limiter = RateLimiter(3, 10.0)
    start = limiter._last
    assert [limiter.allow(start) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(start + 3.4)  # 10 s / 3 per token
    assert not limiter.allow(start + 3.4)
