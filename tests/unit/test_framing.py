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

from chatapp.realtime.framing import Batch, Opcode, frame, header, message_frame, render, whole_texts
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


# A client's frames of every kind whole_texts meets: what it takes, and what it leaves to wsproto.
CLIENT_FRAMES = st.one_of(
    st.text(max_size=300).map(lambda text: frame(Opcode.TEXT, text.encode(), mask=True)),
    st.sampled_from([0, 125, 126, 65535, 65536]).map(lambda n: frame(Opcode.TEXT, b"x" * n, mask=True)),
    st.just(frame(Opcode.PING, b"p", mask=True)),
    st.just(frame(Opcode.BINARY, b"\x00\x01", mask=True)),
    st.just(frame(Opcode.TEXT, b"frag", fin=False, mask=True) + frame(Opcode.CONTINUATION, b"ment", mask=True)),
    st.just(frame(Opcode.TEXT, b"\xff\xfe", mask=True)),  # not UTF-8: wsproto's 1007
    st.just(frame(Opcode.TEXT, b"plain", mask=False)),  # unmasked: wsproto's 1002
    st.just(b"\x81\xfe\x00\x05abcd" + bytes(b ^ k for b, k in zip(b"short", b"abcda", strict=True))),  # 126 for 5
)


@settings(max_examples=300)
@given(frames=st.lists(CLIENT_FRAMES, max_size=8), cut=st.integers(min_value=0, max_value=10))
def test_whole_texts_takes_what_wsproto_would_make_of_the_same_bytes_and_stops_where_it_must(
    frames: list[bytes], cut: int
) -> None:
    """Against wsproto as the server (an independent decoder): the texts taken are the text
    messages wsproto makes of the same bytes, up to the first frame that is not a whole,
    minimal, masked, valid text frame within the limit (or one cut short), where it stops."""
    data = b"".join(frames)
    data = data[: len(data) - cut] if cut < len(data) else data
    texts, taken = whole_texts(data, 65536)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(data[:taken])
    assert [event.data for event in server.events()] == texts  # the same messages, nothing left over
    assert taken == sum(len(f) for f in frames[: len(texts)])
