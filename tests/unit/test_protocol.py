from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatapp.chat import parse_message
from chatapp.realtime.protocol import MAX_DEPTH, ErrorCode, ProtocolError, decode, encode
from tests.helpers import events_of


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.BAD_JSON),
        ('"a string"', ErrorCode.BAD_JSON),
        ("{}", ErrorCode.BAD_TYPE),
        ('{"type": 3}', ErrorCode.BAD_TYPE),
        ('{"type": ""}', ErrorCode.BAD_TYPE),
        ("[" * 100000, ErrorCode.BAD_JSON),
    ],
)
def test_decode_rejects_what_is_not_an_event(text: str, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(text)
    assert info.value.code == code
    assert info.value.event() == {"type": "error", "code": str(code), "detail": info.value.detail}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1020, 5000])
def test_decode_refuses_an_event_nested_deeper_than_max_depth(depth: int) -> None:
    """orjson reads 1,024 levels, json fewer; what either reads must encode again, and an
    app's handler that passes a client's field on must not fail on it."""
    with pytest.raises(ProtocolError) as info:
        decode('{"type":"x","v":' + "[" * (depth - 1) + "]" * (depth - 1) + "}")
    assert info.value.code == ErrorCode.BAD_JSON


def test_an_event_as_deep_as_max_depth_or_full_of_brackets_in_text_is_read_and_encodes_again() -> None:
    deep = '{"type":"x","v":' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    brackets = '{"type":"x","text":"' + "[{" * 100 + '"}'
    for frame in (deep, brackets, deep.encode()):
        assert json.loads(encode(decode(frame))) == json.loads(frame)


def test_decode_returns_the_event() -> None:
    assert decode('{"type": "message", "text": "hi"}') == {"type": "message", "text": "hi"}


@pytest.mark.parametrize(
    "text", ["two\nlines", 'quote " and \\ backslash', "emoji 🎉", "RTL שלום", "nul \x00", "sep \u2028"]
)
def test_encoded_events_split_back_exactly(text: str) -> None:
    events = [{"type": "message", "text": text}, {"type": "join", "n": 1}]
    payload = b"\n".join(encode(e) for e in events)
    assert events_of(payload) == events


def test_encode_is_compact_utf8_on_one_line() -> None:
    data = encode({"type": "x", "text": "é\n"})
    assert data == '{"type":"x","text":"é\\n"}'.encode()
    assert json.loads(data) == {"type": "x", "text": "é\n"}


# -- properties (hypothesis) ---------------------------------------------------------------------
# JSON values as a client could send them (a JSON string may hold a lone surrogate, as an
# escape), and text without lone surrogates (what UTF-8 holds).
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
ANY_TEXT = st.lists(st.characters() | SURROGATES, max_size=20).map("".join)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
PROPERTY = settings(deadline=None, max_examples=300)


@PROPERTY
@given(st.one_of(st.text(), JSON.map(json.dumps), st.builds(lambda v: json.dumps({"type": v}), JSON)))
def test_any_frame_text_decodes_to_an_event_or_a_protocol_error(text: str) -> None:
    try:
        event = decode(text)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_JSON, ErrorCode.BAD_TYPE)
    else:
        assert isinstance(event, dict) and isinstance(event["type"], str) and event["type"]


@dataclass
class Point:
    x: int
    y: int


# What JSON can carry without a lone surrogate (which no UTF-8 holds): any integer, any finite
# float, any text.
def _sendable(floats: bool) -> st.SearchStrategy:
    scalars = st.none() | st.booleans() | st.integers() | st.text()
    if floats:
        scalars |= st.floats(allow_nan=False, allow_infinity=False)
    return st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            scalars,
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=12,
        ),
        max_size=6,
    )


def _standard(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


@PROPERTY
@given(_sendable(floats=False))
def test_encode_writes_what_the_standard_library_writes(event: dict) -> None:
    """orjson, with the standard library's JSON where orjson refuses (integers past 64 bits):
    byte for byte what clients have always been sent."""
    assert encode(event) == _standard(event)


@PROPERTY
@given(_sendable(floats=True))
def test_encoded_floats_read_back_as_the_standard_library_wrote_them(event: dict) -> None:
    """A float may be written in another notation (1e-8, not 1e-08), never another value."""
    data = encode(event)
    assert json.loads(data) == json.loads(_standard(event)) and b"\n" not in data


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("beside", [{}, {"big": 2**64}], ids=["orjson", "json"])
def test_nan_and_the_infinities_are_written_as_null_by_either_encoder(value: float, beside: dict) -> None:
    """json wrote NaN, which JSON.parse refuses, and with it the whole frame a client got."""
    data = encode({"type": "x", "v": [value, {"w": value}], **beside})
    assert json.loads(data, parse_constant=lambda name: pytest.fail(name))["v"] == [None, {"w": None}]


@pytest.mark.parametrize("value", [datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 1), Point(1, 2), {1, 2}])
@pytest.mark.parametrize("beside", [{}, {"big": 2**64}], ids=["orjson", "json"])
def test_what_is_not_json_is_refused_by_either_encoder(value: object, beside: dict) -> None:
    with pytest.raises(TypeError):
        encode({"type": "x", "v": value, **beside})


@PROPERTY
@given(st.builds(lambda v: json.dumps({"type": "x", "v": v}, ensure_ascii=False), JSON))
def test_decode_reads_what_the_standard_library_reads(text: str) -> None:
    """The same event as json.loads, lone surrogates' escapes and NaN included (the handler
    refuses those by field); an integer past 64 bits comes as a float (orjson's reading)."""
    assert _past_64_bits_as_floats(decode(text)) == _past_64_bits_as_floats(json.loads(text))


def _past_64_bits_as_floats(value: object) -> object:
    if isinstance(value, dict):
        return {k: _past_64_bits_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_past_64_bits_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    return value


@PROPERTY
@given(st.fixed_dictionaries({"type": st.just("message")}, optional={"text": ANY_TEXT | JSON, "cid": ANY_TEXT | JSON}))
def test_any_message_event_gives_storable_text_or_a_protocol_error(event: dict) -> None:
    try:
        text, cid = parse_message(event, 2000)
    except ProtocolError:
        return
    assert 0 < len(text) <= 2000 and text == text.strip()
    encode({"text": text, "cid": cid})  # storable and sendable: valid Unicode


def test_a_lone_surrogate_is_refused_not_stored() -> None:
    event = decode('{"type": "message", "text": "bad \\ud800 half"}')  # valid JSON, not valid Unicode
    with pytest.raises(ProtocolError) as info:
        parse_message(event, 2000)
    assert info.value.code == ErrorCode.BAD_FIELD
