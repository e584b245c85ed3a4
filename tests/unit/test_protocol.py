from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatapp.chat import parse_message
from chatapp.realtime.protocol import ErrorCode, ProtocolError, decode, encode
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
