from __future__ import annotations

import json
import struct
import zlib

import pytest

from chatapp.protocol import ErrorCode, ProtocolError, decode, deflated_frame, encode, split_frame, text_frame


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
