"""Wire protocol v1 of the realtime layer: events, error codes, close codes (frames: framing.py).

Client to server: each text frame is one JSON object with a string `type`.
Server to client: each text frame holds one or more events, one compact JSON object per line.
Compact JSON never holds a raw newline (newlines inside strings are escaped), so `\\n` can join
events and clients can split on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any

import orjson


class CloseCode(IntEnum):
    """WebSocket close codes this server chooses (RFC 6455, section 7.4). A protocol violation
    (1002) or a text frame that is not UTF-8 (1007) is found by wsproto, whose code the reader
    passes on."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect at once
    POLICY = 1008  # bad parameters, flood
    TOO_BIG = 1009  # a message over MAX_FRAME_BYTES
    INTERNAL = 1011
    SERVICE_RESTART = 1012  # delivery is back after a backplane outage: reconnect to catch up
    TRY_AGAIN_LATER = 1013  # the client read too slowly and its queue overflowed


class ErrorCode(StrEnum):
    """`code` of an `error` event."""

    BAD_JSON = "bad_json"
    BAD_TYPE = "bad_type"
    BAD_FIELD = "bad_field"
    TOO_LONG = "too_long"
    EMPTY = "empty"
    RATE_LIMITED = "rate_limited"
    BAD_PARAM = "bad_param"
    TOO_SLOW = "too_slow"
    TOO_BIG = "too_big"
    FLOOD = "flood"
    TOO_MANY_ROOMS = "too_many_rooms"  # the worker's MAX_ROOMS is reached: a new room cannot open
    SHUTTING_DOWN = "shutting_down"
    UNAVAILABLE = "unavailable"  # the store or backplane cannot be reached: try again
    DEGRADED = "degraded"  # events may not reach every worker until the backplane is back
    RESYNC = "resync"  # the backplane is back: reconnect with since to catch up
    INTERNAL = "internal"


class ProtocolError(Exception):
    """Input that breaks the protocol; becomes an `error` event for the sender only."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def event(self, cid: str | None = None) -> dict[str, str]:
        return error_event(self.code, self.detail, cid)


def error_event(code: ErrorCode, detail: str, cid: str | None = None) -> dict[str, str]:
    """An `error` event; with the `cid` of the client's event it answers, when it had one and it
    can be sent (a JSON escape may carry a lone surrogate, which no UTF-8 holds)."""
    event = {"type": "error", "code": str(code), "detail": detail}
    if cid is not None and is_unicode(cid):
        event["cid"] = cid[:64]
    return event


def is_unicode(text: str) -> bool:
    """Whether `text` is valid Unicode: JSON may carry a lone surrogate (an escape like
    \\ud800), which no UTF-8 can hold, and which fails whatever encodes it later."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# orjson writes a dict's keys that are not strings as json does (ints, floats, bools, None), and
# refuses datetimes and dataclasses as json does (it would write them).
_ENCODING = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode(event: Mapping[str, Any]) -> bytes:
    """Serialise one event: compact UTF-8 JSON on one line. Done once per event, whoever gets it.

    By orjson, at a tenth of the standard library's cost, and the same bytes as
    `json.dumps(event, ensure_ascii=False, separators=(",", ":"))` but two ways: a float may
    be written in another notation (1e-8, not 1e-08), and NaN and the infinities are written as
    null (json wrote NaN, which is no JSON: a browser's JSON.parse refused the whole frame, and
    with it every event batched beside it). An integer past 64 bits, which orjson refuses, the
    standard library writes, NaN as null still. What is not JSON (a set, a datetime, bytes) is
    TypeError; a lone surrogate, UnicodeEncodeError."""
    try:
        return orjson.dumps(event, option=_ENCODING)
    except TypeError:
        return json.dumps(_finite(event), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _finite(value: Any) -> Any:
    """`value` with each NaN or infinity inside it None, as orjson writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def loads(data: str | bytes) -> Any:
    """Parse JSON: orjson first; what it refuses, the standard library's parser (only such input
    pays twice): JSON's grammar allows a lone surrogate's escape, which orjson refuses, and json
    wrote NaN before `encode` wrote null. An integer past 64 bits comes as a float. ValueError
    (RecursionError when deeper than Python goes) for what is no JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


# How deep a client's event may nest (the chat's are two levels deep). Any event of a client
# can then be encoded again, by orjson (255 levels) and the standard library (Python's recursion
# limit): an app's handler that passes a client's field on cannot fail on it.
MAX_DEPTH = 32


def decode(text: str | bytes) -> dict[str, Any]:
    """Parse one client frame into an event with a string `type`, or raise ProtocolError. A
    lone surrogate's escape comes through, for the handler to refuse in its field by name
    (is_unicode)."""
    try:
        event = loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "a frame must be one JSON object") from None
    if not isinstance(event, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "a frame must be one JSON object")
    if _opened(text) > MAX_DEPTH and not _within(event, MAX_DEPTH):  # few brackets: no deeper than them
        raise ProtocolError(ErrorCode.BAD_JSON, f"an event may nest at most {MAX_DEPTH} levels deep")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError(ErrorCode.BAD_TYPE, "an event needs a string field 'type'")
    return event


def _opened(text: str | bytes) -> int:
    """How many objects and arrays `text` opens at most (brackets in strings count too)."""
    if isinstance(text, str):
        return text.count("{") + text.count("[")
    return text.count(b"{") + text.count(b"[")


def _within(value: Any, depth: int) -> bool:
    """Whether `value` nests no deeper than `depth` levels of objects and arrays (a walk by
    levels, without recursion)."""
    level = [value]
    for _ in range(depth):
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
        if not level:
            return True
    return False
