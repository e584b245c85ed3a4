from __future__ import annotations

import json
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatapp.chat import parse_message
from chatapp.realtime.protocol import ErrorCode, ProtocolError, decode, deflated_frame, encode, split_frame, text_frame


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
    assert split_frame(payload.decode()) == events


def test_encode_is_compact_utf8_on_one_line() -> None:
    data = encode({"type": "x", "text": "é\n"})
    assert data == '{"type":"x","text":"é\\n"}'.encode()
    assert json.loads(data) == {"type": "x", "text": "é\n"}


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 100000])
def test_text_frame_header(size: int) -> None:
    frame = text_frame(b"a" * size)
    assert frame[0] == 0x81  # FIN, text
    if size < 126:
        assert frame[1] == size and len(frame) == 2 + size
    elif size < 65536:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == size
    else:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == size
    assert frame.endswith(b"a" * size)


def test_deflated_frames_inflate_back_in_a_client_that_keeps_its_context() -> None:
    """Each frame is compressed on its own, so one client inflater (RFC 7692 context takeover,
    as the handshake leaves it) reads any sequence of them, whichever client it is."""
    inflater = zlib.decompressobj(-15)
    for payload in (encode({"type": "message", "text": "héllo 👋\nשלום"}), b"x" * 70_000, b"short"):
        frame = deflated_frame(payload)
        assert frame[0] == 0xC1  # FIN, RSV1 (compressed), text
        size, header = frame[1], 2
        if size == 126:
            size, header = struct.unpack("!H", frame[2:4])[0], 4
        elif size == 127:
            size, header = struct.unpack("!Q", frame[2:10])[0], 10
        assert len(frame) == header + size
        assert inflater.decompress(frame[header:] + b"\x00\x00\xff\xff") == payload


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
UNICODE = st.text(alphabet=st.characters(exclude_categories=("Cs",)))
PROPERTY = settings(deadline=None, max_examples=300)


def frames_of(data: bytes) -> list[tuple[int, bytes]]:
    """Split server frames back: (first byte, payload) each (server frames are unmasked)."""
    frames, pos = [], 0
    while pos < len(data):
        size, header = data[pos + 1], 2
        if size == 126:
            size, header = struct.unpack("!H", data[pos + 2 : pos + 4])[0], 4
        elif size == 127:
            size, header = struct.unpack("!Q", data[pos + 2 : pos + 10])[0], 10
        frames.append((data[pos], data[pos + header : pos + header + size]))
        pos += header + size
    return frames


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


@PROPERTY
@given(st.lists(st.dictionaries(st.text(max_size=8), UNICODE | st.integers(), max_size=4), min_size=1, max_size=5))
def test_encoded_events_in_one_frame_split_back_exactly(events: list[dict]) -> None:
    events = [{"type": "x", **event} for event in events]
    payload = b"\n".join(encode(event) for event in events)
    assert split_frame(payload.decode()) == events
    ((first, body),) = frames_of(text_frame(payload))
    assert (first, body) == (0x81, payload)
    ((first, body),) = frames_of(deflated_frame(payload))
    assert first == 0xC1 and zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == payload
