"""Frames, batches and rendering, read back by wsproto (an independent decoder) where it can."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate

from chatapp.realtime.framing import (
    WHOLE_TEXT_MAX,
    Batch,
    Opcode,
    frame,
    header,
    message_frame,
    render,
    whole_texts,
)
from chatapp.realtime.protocol import encode
from tests.helpers import events_of

SIZES = [0, 125, 126, 65535, 65536, 100_000]  # each side of the 7-bit, 16-bit and 64-bit lengths


def client(deflate: bool = False) -> WSConnection:
    """wsproto as a client reads server frames; with `deflate`, as agreed in a handshake."""
    extensions = []
    if deflate:
        extension = PerMessageDeflate()
        extension.finalize("permessage-deflate")
        extensions.append(extension)
    return WSConnection(ConnectionType.CLIENT, extensions)


def read(ws: WSConnection, data: bytes) -> list[str | bytes]:
    """The whole messages in `data`."""
    ws.receive_data(data)
    messages, parts = [], []
    for event in ws.events():
        assert isinstance(event, TextMessage | BytesMessage), event
        parts.append(event.data)
        if event.message_finished:
            messages.append(type(parts[0])().join(parts))
            parts = []
    assert not parts
    return messages


@pytest.mark.parametrize("size", SIZES)
def test_a_server_frame_of_any_size_reads_back_in_a_client(size: int) -> None:
    payload = os.urandom(size)
    data = message_frame(payload, binary=True)
    assert header(data) == (0x82, len(data) - size, len(data))  # FIN, binary; no mask
    assert read(client(), data) == [payload]


@pytest.mark.parametrize("size", SIZES)
def test_a_masked_client_frame_of_any_size_reads_back_in_a_server(size: int) -> None:
    payload = os.urandom(size)
    data = frame(Opcode.BINARY, payload, mask=True)
    assert data[1] & 0x80 and header(data) == (0x82, len(data) - size, len(data))
    assert read(WSConnection(ConnectionType.SERVER), data) == [payload]  # wsproto refuses unmasked


def test_client_fragments_make_one_message() -> None:
    data = frame(Opcode.TEXT, b"in ", fin=False, mask=True) + frame(Opcode.CONTINUATION, b"parts", mask=True)
    assert read(WSConnection(ConnectionType.SERVER), data) == ["in parts"]


@pytest.mark.parametrize(("size", "length"), [(5, 2), (300, 4), (70_000, 10)])
def test_header_says_nothing_until_it_can_tell_where_the_frame_ends(size: int, length: int) -> None:
    data = b"before" + message_frame(b"x" * size)
    for cut in range(6, 6 + length):
        assert header(data[:cut], 6) is None
    assert header(data[: 6 + length], 6) == (0x81, 6 + length, len(data))


def test_deflated_frames_read_back_in_a_client_that_keeps_its_context() -> None:
    """Each frame is compressed on its own, so one client inflater (RFC 7692 context takeover,
    as the handshake leaves it) reads any sequence of them, whichever client it is."""
    reader = client(deflate=True)
    for payload in (encode({"type": "message", "text": "héllo 👋\nשלום"}), b"x" * 70_000, b"short"):
        data = message_frame(payload, deflate=True)
        assert data[0] == 0xC1  # FIN, RSV1 (compressed), text
        assert read(reader, data) == [payload.decode()]


def test_one_batch_goes_out_as_its_shared_frame() -> None:
    batch = Batch([b"a", b"b"])
    assert render([batch], deflate=False) is batch.frame
    assert render([batch], deflate=True) is batch.deflated
    assert read(client(), batch.frame) == ["a\nb"]


def test_several_batches_are_joined_into_one_frame() -> None:
    batches = [Batch([b"a"]), Batch([b"b", b"c"])]
    assert render(batches, deflate=False) == message_frame(b"a\nb\nc")
    assert read(client(deflate=True), render(batches, deflate=True)) == ["a\nb\nc"]
    assert render([], deflate=False) == b""


def test_events_seen_through_a_seq_are_dropped_whenever_they_come() -> None:
    mixed = Batch([b"m4", b"join", b"m5"], [4, None, 5])
    newer = Batch([b"m6", b"m7"], [6, 7])
    assert render([mixed, newer], False, seen_through=5) == message_frame(b"join\nm6\nm7")
    assert render([newer], False, seen_through=5) is newer.frame  # nothing to drop: the shared frame
    late = Batch([b"m3", b"m8"], [3, 8])  # another worker published m3 late
    assert render([late], False, seen_through=5) == message_frame(b"m8")
    assert render([Batch([b"m2"], [2])], False, seen_through=5) == b""


UNICODE = st.text(alphabet=st.characters(exclude_categories=("Cs",)))


@settings(deadline=None, max_examples=300)
@given(st.lists(st.dictionaries(st.text(max_size=8), UNICODE | st.integers(), max_size=4), min_size=1, max_size=5))
def test_encoded_events_in_one_frame_split_back_exactly(events: list[dict]) -> None:
    events = [{"type": "x", **event} for event in events]
    data = render([Batch([encode(event)]) for event in events], deflate=False)
    first, start, end = header(data)
    assert (first, end) == (0x81, len(data))
    assert events_of(data[start:]) == events
    assert [
        events_of(message) for message in read(client(deflate=True), message_frame(data[start:], deflate=True))
    ] == [events]


# A client's frames of every kind whole_texts meets: (the frame, its text if whole_texts may
# take it within a limit, else None), each masked with a drawn key, so that examples replay.
@st.composite
def client_frames(draw: st.DrawFn) -> tuple[bytes, str | None]:
    key = draw(st.binary(min_size=4, max_size=4))
    kind = draw(
        st.sampled_from(["text", "text", "sized", "ping", "binary", "fragment", "bad", "unmasked", "rsv1", "long"])
    )
    if kind in ("text", "sized"):
        text = (
            draw(st.text(max_size=300))
            if kind == "text"
            else "x" * draw(st.sampled_from([125, 126, 4096, 4097, 65535, 65536]))
        )
        return frame(Opcode.TEXT, text.encode(), mask=True, key=key), text
    if kind == "ping":
        return frame(Opcode.PING, b"p", mask=True, key=key), None
    if kind == "binary":
        return frame(Opcode.BINARY, b"\x00\x01", mask=True, key=key), None
    if kind == "fragment":
        return frame(Opcode.TEXT, b"fr", fin=False, mask=True, key=key) + frame(
            Opcode.CONTINUATION, b"ag", mask=True, key=key
        ), None
    if kind == "bad":  # not UTF-8 (a lone surrogate, an overlong NUL, a stray byte): wsproto's 1007
        return frame(
            Opcode.TEXT, draw(st.sampled_from([b"\xed\xa0\x80", b"\xc0\x80", b"\xff"])), mask=True, key=key
        ), None
    if kind == "unmasked":
        return frame(Opcode.TEXT, b"plain"), None
    if kind == "rsv1":
        return frame(Opcode.TEXT, b"squeezed", rsv1=True, mask=True, key=key), None
    # a length in two bytes where one would do: wsproto's 1002
    return b"\x81\xfe\x00\x05" + key + bytes(b ^ k for b, k in zip(b"short", key * 2, strict=False)), None


def wsproto_events(data: bytes) -> list[tuple[str, object]]:
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(data)
    return [(type(e).__name__, getattr(e, "data", getattr(e, "code", None))) for e in server.events()]


@settings(max_examples=500, deadline=None)
@given(
    frames=st.lists(client_frames(), max_size=8),
    cut=st.integers(min_value=0, max_value=10),
    limit=st.sampled_from([0, 125, 126, 300, 4096, 1 << 20]),
)
def test_whole_texts_takes_exactly_the_whole_text_frames_wsproto_would_and_leaves_it_the_rest(
    frames: list[tuple[bytes, str | None]], cut: int, limit: int
) -> None:
    """Against wsproto as the server (an independent decoder): whole_texts takes every leading
    frame it may (a whole, masked, minimal, valid text frame within the limit and
    WHOLE_TEXT_MAX), no other, each ending where its frame ends; and wsproto, given the rest,
    makes of it what it makes of those bytes after the same messages."""
    data = b"".join(f for f, _text in frames)
    data = data[: max(0, len(data) - cut)]
    expected, end = [], 0
    for raw, text in frames:
        if text is None or len(text.encode()) > min(limit, WHOLE_TEXT_MAX) or end + len(raw) > len(data):
            break
        end += len(raw)
        expected.append((text, end))
    taken = list(whole_texts(data, limit))
    assert taken == expected
    rest = data[expected[-1][1] :] if expected else data
    assert wsproto_events(data) == [("TextMessage", text) for text, _end in expected] + wsproto_events(rest)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (frame(Opcode.TEXT, b"x" * 65536, mask=True, key=b"abcd"), "a length in eight bytes"),
        (frame(Opcode.TEXT, b"x" * (WHOLE_TEXT_MAX + 1), mask=True, key=b"abcd"), "past WHOLE_TEXT_MAX"),
        (frame(Opcode.TEXT, b"squeezed", rsv1=True, mask=True, key=b"abcd"), "an RSV bit"),
        (frame(Opcode.TEXT, b"\xed\xa0\x80", mask=True, key=b"abcd"), "a surrogate"),
    ],
)
def test_whole_texts_leaves_to_wsproto(raw: bytes, why: str) -> None:
    """The frames it must leave, with a key that keeps every masked byte ASCII (so that only
    the check, not a failed decode, can leave them): nothing is taken, and wsproto reads it."""
    before = frame(Opcode.TEXT, b"first", mask=True, key=b"abcd")
    assert list(whole_texts(before + raw, 1 << 20)) == [("first", len(before))], why
