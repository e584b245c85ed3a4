"""WebSocket framing (RFC 6455, permessage-deflate of RFC 7692): the one frame encoder, for
the server's frames and for the clients of the tests and bench/ (masked); the Batch that a
room's events travel in; and the rendering of queued batches into one frame for one client.
A server frame holds one or more events, one per line (protocol.py says why that is safe).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from enum import IntEnum


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


FIN, RSV1, MASKED = 0x80, 0x40, 0x80
WHOLE_TEXT_MAX = 4096  # bytes: a longer client frame is wsproto's to parse (whole_texts)


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, mask: bool = False, key: bytes = b""
) -> bytes:
    """One whole frame. A server's frames are unmasked; a client's must be masked (`mask`: a
    random key, as RFC 6455 asks of clients, or `key`). `rsv1` marks a compressed message."""
    first = (FIN if fin else 0) | (RSV1 if rsv1 else 0) | opcode
    size = len(payload)
    masked = MASKED if mask else 0
    if size < 126:
        header = bytes((first, masked | size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, masked | 126, size)
    else:
        header = struct.pack("!BBQ", first, masked | 127, size)
    if not mask:
        return header + payload
    key = key or os.urandom(4)
    keys = (key * (size // 4 + 1))[:size]  # XOR as one big integer: far faster than byte by byte
    return header + key + (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(size, "big")


def header(data: bytes | bytearray, pos: int = 0) -> tuple[int, int, int] | None:
    """The frame that starts at `pos`: (its first byte, where its payload starts, where it
    ends), or None while `data` is too short to tell. A masked payload starts after its key."""
    left = len(data) - pos
    if left < 2:
        return None
    size, start = data[pos + 1] & 0x7F, pos + 2
    if size == 126:
        if left < 4:
            return None
        size, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
    elif size == 127:
        if left < 10:
            return None
        size, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
    if data[pos + 1] & MASKED:
        start += 4
    return data[pos], start, start + size


def message_frame(payload: bytes, *, binary: bool = False, deflate: bool = False) -> bytes:
    """A whole server data frame holding one message; with `deflate`, compressed on its own,
    with no reference to earlier messages, which a server may always do: the same bytes are
    right for every client that agreed permessage-deflate with our 32 KB window, so a room's
    frame is compressed once."""
    opcode = Opcode.BINARY if binary else Opcode.TEXT
    if not deflate:
        return frame(opcode, payload)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return frame(opcode, data[:-4], rsv1=True)  # without the 00 00 ff ff that ends a sync flush


class Batch:
    """Events for one room from one Hub round: the payload is joined once and framed once,
    and every member gets the same object (nobody changes it after it is made).

    `seqs` holds each event's sequence number within the room (None for events without one),
    or is None when no event has one; `render` uses them to drop what a client already has."""

    __slots__ = ("_deflated", "_frame", "events", "low", "payload", "seqs", "size")

    def __init__(self, events: list[bytes], seqs: list[int | None] | None = None) -> None:
        self.events = events
        numbered = [seq for seq in seqs if seq is not None] if seqs is not None else []
        self.seqs = seqs if numbered else None
        # the lowest seq, so that most batches need one comparison in `after` (-1: some events
        # have no seq, and the batch must be looked at event by event)
        self.low = min(numbered) if numbered and len(numbered) == len(events) else -1
        self.payload = b"\n".join(events)
        self.size = len(self.payload)  # what it weighs in a send queue (SEND_QUEUE_BYTES)
        self._frame: bytes | None = None
        self._deflated: bytes | None = None

    @property
    def frame(self) -> bytes:
        """The whole frame, built by the first writer that needs it."""
        if self._frame is None:
            self._frame = message_frame(self.payload)
        return self._frame

    @property
    def deflated(self) -> bytes:
        """The frame compressed, for clients with permessage-deflate; built once too."""
        if self._deflated is None:
            self._deflated = message_frame(self.payload, deflate=True)
        return self._deflated

    def after(self, seen_through: int) -> Batch | None:
        """This batch without its events numbered up to `seen_through`: itself when it has
        none, None when nothing is left."""
        if self.seqs is None or self.low > seen_through:
            return self
        events = [e for e, seq in zip(self.events, self.seqs, strict=True) if seq is None or seq > seen_through]
        return Batch(events) if events else None


def render_lines(
    batches: list[Batch], line_of: Callable[[bytes], str | None], seen_through: int | None = None
) -> bytes:
    """Queued batches as one frame of plain-text lines for one client (a terminal's): each event
    (not numbered up to `seen_through`) as `line_of` renders it, those it renders as None left
    out; b"" when no line is left. Per client: such clients are few."""
    if seen_through is not None:
        batches = [kept for batch in batches if (kept := batch.after(seen_through)) is not None]
    lines = [line for batch in batches for event in batch.events if (line := line_of(event)) is not None]
    return message_frame("\n".join(lines).encode()) if lines else b""


def render(batches: list[Batch], deflate: bool, seen_through: int | None = None) -> bytes:
    """Queued batches as one frame for one client (b"" when no event is left): the events of
    all of them, one per line, without those numbered up to `seen_through`. A batch that goes
    out alone goes as its shared frame, built once for the whole room."""
    if seen_through is not None:
        batches = [kept for batch in batches if (kept := batch.after(seen_through)) is not None]
    if len(batches) == 1:
        return batches[0].deflated if deflate else batches[0].frame
    if not batches:
        return b""
    return message_frame(b"\n".join(batch.payload for batch in batches), deflate=deflate)


def whole_texts(data: bytes, limit: int, pos: int = 0) -> Iterator[tuple[str, int]]:
    """The text messages from `pos` on in `data` (a client's bytes; a frame starts at `pos`)
    that are each one whole frame: FIN, no RSV bit, masked, a length of one byte or a minimal
    two, at most `limit` and WHOLE_TEXT_MAX bytes, valid UTF-8; each with where its frame ends.
    Lazily: a reader that stops taking (a client past its frame budget) parses no more.
    Everything from the first frame that is not one (control frames, fragments, compressed or
    bigger messages, bad UTF-8, a frame not all read yet) is the reader's to hand to wsproto,
    to parse and to refuse. Written by hand for the common frame only: wsproto takes about 18
    us for a small one, this 2 (the XOR of a whole payload as one big integer, no faster than
    wsproto's strided XOR past a few KB), and a message taken in is the ingest's first cost."""
    end, first = len(data), FIN | Opcode.TEXT
    limit = min(limit, WHOLE_TEXT_MAX)
    while end - pos >= 6 and data[pos] == first and data[pos + 1] & MASKED:
        size, start = data[pos + 1] & 0x7F, pos + 6
        if size == 126:
            size, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 8
            if size < 126:  # not minimal: wsproto's protocol error
                return
        elif size == 127:
            return
        if size > limit or start + size > end:
            return
        key = int.from_bytes(data[start - 4 : start] * (size // 4 + 1), "little") & ((1 << 8 * size) - 1)
        try:
            text = (int.from_bytes(data[start : start + size], "little") ^ key).to_bytes(size, "little").decode()
        except UnicodeDecodeError:
            return
        pos = start + size
        yield text, pos
