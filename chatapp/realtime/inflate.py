"""permessage-deflate that cannot be a bomb: what a client sends is inflated at most to the
message limit (plus one byte to see it passed), never whole. wsproto's PerMessageDeflate
inflates every frame whole, so a few KB compressed could make many MB in the worker before the
reader sees the message's size; this one stops at MAX_FRAME_BYTES and fails the connection with
1009 (message too big), having spent a bounded time and memory."""

from __future__ import annotations

import zlib

from wsproto.connection import Connection as WSConnection
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol


class BoundedInflate(PerMessageDeflate):
    """PerMessageDeflate, inflating at most `limit` + 1 bytes of one message (see the module)."""

    limit: int
    inflated: int  # bytes of the current message so far

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        try:
            out = self._decompressor.decompress(bytes(data), self.limit + 1 - self.inflated)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += len(out)
        if self.inflated > self.limit:  # what is left of the input is never inflated
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        if fin:
            self.inflated = 0
        return super().frame_inbound_complete(proto, fin)


def bound_inflate(ws: WSConnection, limit: int) -> None:
    """Make the permessage-deflate that `ws` agreed (if any) a BoundedInflate of `limit` bytes.
    wsproto keeps the agreed extensions in its frame protocol, and has no public getter."""
    for extension in ws._proto.extensions:
        if type(extension) is PerMessageDeflate:
            extension.__class__ = BoundedInflate  # the same negotiated state, bounded inbound
            extension.limit, extension.inflated = limit, 0  # type: ignore[attr-defined]
