"""One connection on a socket pair, its peer read by wsproto's client side: its send queue,
its states, and what its writer sends when."""

from __future__ import annotations

import itertools
import socket
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import gevent
import gevent.socket
import pytest
from gevent.queue import Full
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from chatapp.config import Config
from chatapp.realtime.client import (
    CLOSED,
    CLOSING,
    CONNECTING,
    OPEN,
    TURN_EVERY,
    Connection,
    SendQueue,
    _between_messages,
)
from chatapp.realtime.framing import Batch, Opcode, frame
from chatapp.realtime.hub import PING
from chatapp.realtime.protocol import CloseCode, ErrorCode, encode
from tests.helpers import TIMEOUT, events_of
from tests.unit.test_framing import client_frames


# -- the send queue ---------------------------------------------------------------------------------
def batches(*texts: str) -> list[Batch]:
    return [Batch([text.encode()]) for text in texts]


def test_send_queue_is_bounded_and_hands_everything_over_in_order() -> None:
    queue = SendQueue(3, 1024)
    a, b, c, d = batches("a", "b", "c", "d")
    for item in (a, b, c):
        queue.put_nowait(item)
    with pytest.raises(Full):
        queue.put_nowait(d)
    assert queue.take() == [a, b, c]
    assert queue.take() == [] and queue.empty()


def test_send_queue_is_bounded_in_bytes_too() -> None:
    """Batches grow with load: a client that never reads must not pin more than the bytes."""
    queue = SendQueue(256, 3000)
    big = batches("x" * 1500, "y" * 1500, "z" * 1500)
    queue.put_nowait(big[0])
    queue.put_nowait(big[1])
    with pytest.raises(Full):
        queue.put_nowait(big[2])  # 4,500 bytes > 3,000
    queue.take()
    huge = Batch([b"h" * 5000])
    queue.put_nowait(huge)  # alone, one batch over the bound still goes to a client that reads
    with pytest.raises(Full):
        queue.put_nowait(big[2])


# -- a connection and its peer ------------------------------------------------------------------------
class Peer:
    """The client's end of the socket pair: what the server wrote, read by wsproto."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []

    def next(self, timeout: float = TIMEOUT) -> Event:
        """The next whole message: a TextMessage (its parts joined, as a big one comes in
        several reads), a Ping or a CloseConnection."""
        event = self._next(timeout)
        while isinstance(event, TextMessage) and not event.message_finished:
            part = self._next(timeout)
            assert isinstance(part, TextMessage), part  # a message's frame is never cut by another
            event = TextMessage(event.data + part.data, part.frame_finished, part.message_finished)
        return event

    def _next(self, timeout: float) -> Event:
        while not self.pending:
            with gevent.Timeout(timeout):
                data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the socket")
            self.ws.receive_data(data)
            self.pending += self.ws.events()
        return self.pending.pop(0)

    def lines(self) -> list[dict[str, Any]]:
        """The events of the next text frame (pings skipped)."""
        while not isinstance(event := self.next(), TextMessage):
            assert isinstance(event, Ping), event
        return events_of(event.data)

    def until_close(self) -> tuple[list[dict[str, Any]], int]:
        """The events of every frame up to the close frame, and its code."""
        events: list[dict[str, Any]] = []
        while not isinstance(event := self.next(), CloseConnection):
            if isinstance(event, TextMessage):
                events += events_of(event.data)
        return events, event.code


Open = Callable[..., tuple[Connection, Peer]]


@pytest.fixture
def open_() -> Iterator[Open]:
    """Open connections on socket pairs (on TCP with `tcp`), with their readers running unless
    `reader=False`; when the test is over, each peer goes and the connection ends as under
    a session (session.py)."""
    opened: list[tuple[Connection, Peer, socket.socket]] = []

    def make(reader: bool = True, tcp: bool = False, **settings: Any) -> tuple[Connection, Peer]:
        ours, theirs = tcp_pair() if tcp else gevent.socket.socketpair()
        conn = Connection(ours, WSConnection(ConnectionType.SERVER), replace(Config(), **settings), {}, "test")
        conn.data["received"] = []
        if reader:
            gevent.spawn(conn.read_pump, lambda conn, message: conn.data["received"].append(message))
        opened.append((conn, Peer(theirs), ours))
        return conn, opened[-1][1]

    yield make
    for conn, peer, ours in opened:
        peer.sock.close()
        conn.end()
        assert not conn.writing and conn.state is CLOSED
        ours.close()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with gevent.socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        theirs = gevent.socket.create_connection(listener.getsockname())
        return listener.accept()[0], theirs


def room_event(text: str, seq: int | None = None) -> Batch:
    return Batch([encode({"type": "message", "text": text})], [seq])


def test_the_welcome_goes_out_first_and_with_what_the_hub_offered_meanwhile_in_one_frame(open_: Open) -> None:
    conn, peer = open_()
    assert conn.offer(room_event("before the welcome")) and conn.offer(PING)
    conn.send({"type": "welcome"})
    assert conn.state is CONNECTING and not conn.writing and conn.queued == 2  # PING is not held
    conn.start_writer()
    assert conn.state is OPEN
    assert peer.lines() == [{"type": "welcome"}, {"type": "message", "text": "before the welcome"}]


def test_what_is_held_while_connecting_counts_against_the_queue_size(open_: Open) -> None:
    conn, peer = open_(send_queue_size=3)
    conn.send({"type": "welcome"})
    assert conn.offer(room_event("1")) and conn.offer(room_event("2"))
    assert not conn.offer(room_event("3"))  # the fourth: too slow
    assert conn.close_reason == (CloseCode.TRY_AGAIN_LATER, "you read too slowly") and conn.queued == 0
    conn.start_writer()
    assert conn.state is CLOSING
    events, code = peer.until_close()
    assert (events, code) == ([{"type": "error", "code": "too_slow", "detail": "you read too slowly"}], 1013)


def test_a_full_queue_closes_with_1013_and_what_was_queued_is_dropped(open_: Open) -> None:
    conn, peer = open_(send_queue_size=4)
    conn.start_writer()
    assert conn.offer(PING)  # a writer is started: what comes next is queued behind it
    assert all(conn.offer(room_event(str(n))) for n in range(3))  # the writer has not run yet
    assert not conn.offer(room_event("one too many"))
    assert conn.offer(room_event("after the close"))  # dropped quietly: the Hub forgot it already
    events, code = peer.until_close()
    assert code == CloseCode.TRY_AGAIN_LATER and [e["type"] for e in events] == ["error"]


def test_the_first_close_request_wins_and_goes_out_after_what_was_queued(open_: Open) -> None:
    conn, peer = open_()
    conn.start_writer()
    conn.offer(room_event("last"))
    conn.close(CloseCode.GOING_AWAY, ErrorCode.SHUTTING_DOWN, "restarting")
    conn.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.TOO_SLOW, "too slow")  # too late: ignored
    events, code = peer.until_close()
    assert code == CloseCode.GOING_AWAY
    assert [e.get("text") or e.get("code") for e in events] == ["last", "shutting_down"]


def test_events_are_written_at_once_by_whoever_offers_them_while_no_writer_runs(open_: Open) -> None:
    """The Hub writes a room's frame to each client itself: no writer is woken for an event."""
    conn, peer = open_()
    started = count_writers(conn)
    conn.send({"type": "welcome"})
    conn.start_writer()  # the welcome, written by this greenlet
    for n in range(3):
        conn.offer(room_event(str(n)))
    assert not conn.writing and started == [0, 0]
    assert peer.lines() == [{"type": "welcome"}]
    assert [peer.lines()[0]["text"] for _ in range(3)] == ["0", "1", "2"]  # a frame each, in order
    conn.close(CloseCode.NORMAL)  # a close frame goes through a writer
    assert peer.until_close() == ([], CloseCode.NORMAL)
    assert started == [1, 1]


def test_a_ping_starts_a_writer_that_pings_and_ends(open_: Open) -> None:
    conn, peer = open_()
    started = count_writers(conn)
    conn.start_writer()  # nothing held: no writer
    for _ in range(3):  # an idle client holds no writer between pings
        conn.offer(PING)
        assert isinstance(peer.next(), Ping)
        gevent.idle()
        assert not conn.writing
    assert started == [3, 1]


def test_what_the_kernel_does_not_take_at_once_goes_out_whole_before_what_comes_after(open_: Open) -> None:
    """A client that reads slowly: the event written at once is taken in part, its writer
    writes the rest (blocking, within WRITE_TIMEOUT) and then what was queued meanwhile; every
    frame arrives whole and in order."""
    conn, peer = open_()
    started = count_writers(conn)
    conn.start_writer()
    big = room_event("x" * 4_000_000)  # more than a socket pair's buffers hold
    conn.offer(big)
    assert conn.writing  # the rest is a writer's
    for n in range(3):
        conn.offer(room_event(str(n)))  # queued behind it
    assert conn.queued == 3
    texts: list[str] = []
    while len(texts) < 4:
        texts += [event["text"] for event in peer.lines()]
    assert [len(texts[0]), *texts[1:]] == [4_000_000, "0", "1", "2"]
    gevent.idle()
    assert not conn.writing and started == [1, 1]


def test_an_event_that_cannot_be_rendered_ends_that_connection_not_the_offerers_round(open_: Open) -> None:
    """A text client's `lines` (the app's render) that raises on an event: the connection ends
    (CLOSED, its socket shut down, as when its writer rendered it), and `offer`, called by the
    Hub for every member of the room, does not raise: else the Hub takes the client out of its
    rooms and leaves it OPEN, pinged and never closed, shown nothing more."""

    def lines(event: bytes) -> str | None:
        if b"bad" in event:
            raise KeyError("user")
        return event.decode()

    conn, peer = open_()
    conn.lines = lines
    conn.start_writer()
    assert conn.offer(room_event("bad"))  # the Hub's greenlet
    with pytest.raises(EOFError):
        peer.next()
    assert conn.state is CLOSED


def test_a_peer_silent_past_the_pong_timeout_is_dropped_without_a_close_frame(open_: Open) -> None:
    conn, peer = open_(ping_interval=1.0, pong_timeout=1.0)
    conn.start_writer()
    conn.last_seen -= 2.5
    conn.offer(PING)
    with pytest.raises(EOFError):
        peer.next()
    assert conn.state is CLOSED and conn.offer(room_event("late")) and conn.queued == 0  # dropped


def test_skip_through_drops_the_events_the_welcome_had_already(open_: Open) -> None:
    conn, peer = open_()
    conn.skip_through(5)
    conn.offer(Batch([b'{"n":4}', b'{"n":6}'], [4, 6]))
    conn.send({"type": "welcome"})
    conn.start_writer()
    conn.offer(Batch([b'{"n":5}', b'{"n":7}'], [5, 7]))  # published late by another worker
    assert peer.lines() == [{"type": "welcome"}, {"n": 6}]  # written by start_writer
    assert peer.lines() == [{"n": 7}]  # written as it was offered
    with pytest.raises(RuntimeError, match="CONNECTING"):
        conn.skip_through(9)


def test_each_change_of_state_is_checked(open_: Open) -> None:
    conn, _ = open_()
    conn.start_writer()
    with pytest.raises(RuntimeError, match="cannot go to OPEN; from OPEN only to CLOSING or CLOSED"):
        conn.start_writer()


def test_a_writer_that_failed_on_a_reset_leaves_the_peers_last_message_to_the_reader(open_: Open) -> None:
    """The connection is CLOSED, and the reader still hands on what came before the reset."""
    conn, peer = open_(reader=False, tcp=True)
    conn.start_writer()
    peer.sock.sendall(frame(Opcode.TEXT, b"my last words", mask=True))
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.sock.close()  # with a reset
    gevent.sleep(0.05)  # the reset arrives
    conn.offer(room_event("to nobody"))
    gevent.idle()
    assert conn.state is CLOSED  # the write failed
    received = conn.data["received"]
    with gevent.Timeout(TIMEOUT):
        conn.read_pump(lambda conn, message: received.append(message))
    assert received == ["my last words"]


def count_writers(conn: Connection) -> list[int]:
    """[writers started, most at once] for `conn` from now on."""
    counts, running = [0, 0], [0]
    pump = conn._write_pump

    def counted() -> None:
        counts[0] += 1
        running[0] += 1
        counts[1] = max(counts[1], running[0])
        try:
            pump()
        finally:
            running[0] -= 1

    conn._write_pump = counted  # type: ignore[method-assign]
    return counts


def test_what_is_held_while_connecting_keeps_to_the_queues_bytes() -> None:
    """Held items go into the send queue when the connection opens: held past its bytes, the
    client is too slow there and then (it used to raise Full when it opened)."""
    conn = Connection(None, None, Config(send_queue_bytes=4096), {}, "x")  # type: ignore[arg-type]
    assert conn.offer(Batch([b"a" * 2000])) and conn.offer(Batch([b"b" * 2000]))
    assert conn.offer(Batch([b"c" * 2000])) is False  # 6,000 bytes > 4,096: closing, 1013
    assert conn.close_reason == (1013, "you read too slowly")


def test_what_the_hub_offers_after_a_close_asked_for_while_connecting_is_dropped(open_: Open) -> None:
    """A resync asked for while the client connects (its room came back after a loss) goes
    out after the welcome and what was held before it, and nothing offered after it: the
    client resumes with the last id it was shown, which must not be past one it missed."""
    conn, peer = open_()
    conn.send({"type": "welcome"})
    assert conn.offer(room_event("before", 100))
    conn.close(CloseCode.SERVICE_RESTART, ErrorCode.RESYNC, "delivery is back")
    assert conn.offer(room_event("after", 102))  # dropped quietly
    conn.start_writer()
    events, code = peer.until_close()
    assert code == CloseCode.SERVICE_RESTART
    assert [e.get("text") or e.get("code") or e["type"] for e in events] == ["welcome", "before", "resync"]


def test_a_burst_of_frames_is_read_a_few_at_a_time_with_the_others_running_between(open_: Open) -> None:
    """Fairness: 1,600 frames in one read (no frame budget here) are not handled all at once:
    every TURN_EVERY frames, 128 at most, the other greenlets (the Hub, writers, other readers) run."""
    conn, peer = open_(frame_rate_limit=0)
    seen: list[int] = []  # how many the reader had handled, each time another greenlet ran

    def other() -> None:
        while True:
            seen.append(len(conn.data["received"]))
            gevent.sleep(0)

    watcher = gevent.spawn(other)
    gevent.sleep(0)
    peer.sock.sendall(frame(Opcode.TEXT, b"{}", mask=True) * 1600)
    with gevent.Timeout(TIMEOUT):
        while len(conn.data["received"]) < 1600:
            gevent.sleep(0.01)
    watcher.kill()
    counts = sorted({0, 1600, *(n for n in seen if 0 < n < 1600)})
    assert max(b - a for a, b in itertools.pairwise(counts)) <= TURN_EVERY <= 128  # the others ran that often


def test_a_reader_hands_on_no_message_once_closing_and_counts_those_it_handed_on(open_: Open) -> None:
    """Three whole text frames in one read (the reader's fast path), the handler closing the
    connection at the second: the first two are handed on and counted, the third is not."""
    conn, peer = open_(reader=False)
    conn.start_writer()
    received: list[str | bytes] = []

    def on_message(conn: Connection, message: str | bytes) -> None:
        received.append(message)
        if message == "b":
            conn.close(CloseCode.NORMAL)

    peer.sock.sendall(b"".join(frame(Opcode.TEXT, text, mask=True) for text in (b"a", b"b", b"c")))
    with gevent.Timeout(TIMEOUT):
        reader = gevent.spawn(conn.read_pump, on_message)
        peer.until_close()
        peer.sock.close()
        reader.join()
    assert received == ["a", "b"] and conn._stats.events_in == 2


def test_the_reader_parses_frames_itself_only_where_wsproto_holds_nothing() -> None:
    """_between_messages reads wsproto's parser (pinned): the fast path of whole text frames
    may start only between messages, with no extension on; a wsproto that changed inside
    fails here, not in production."""

    def fed(*chunks: bytes, extensions: list | None = None) -> WSConnection:
        ws = WSConnection(ConnectionType.SERVER, extensions)
        for chunk in chunks:
            ws.receive_data(chunk)
            list(ws.events())
        return ws

    whole = frame(Opcode.TEXT, b"hello", mask=True)
    assert _between_messages(fed()) and _between_messages(fed(whole))
    assert not _between_messages(fed(whole[:1]))  # a header begun
    assert not _between_messages(fed(whole[:6]))  # a header read, its payload not yet
    assert not _between_messages(fed(whole[:-2]))  # a payload begun
    assert not _between_messages(fed(frame(Opcode.TEXT, b"frag", fin=False, mask=True)))  # a message begun
    deflate = PerMessageDeflate()
    deflate.finalize("permessage-deflate")
    assert not _between_messages(fed(extensions=[deflate]))
    closing = fed()
    closing.send(CloseConnection(code=1000))
    assert not _between_messages(closing)


def messages_of(events: Iterable[Event | str]) -> list[tuple[str, object]]:
    """Whole messages (their parts joined), pings and the close, as a reader hands them on (a
    str: a whole text message, from the reader's fast path)."""
    seen: list[tuple[str, object]] = []
    parts: list[Any] = []
    for event in events:
        if isinstance(event, str):
            seen.append(("TextMessage", event))
        elif isinstance(event, TextMessage | BytesMessage):
            parts.append(event.data)
            if event.message_finished:
                seen.append((type(event).__name__, parts[0][:0].join(parts)))
                parts = []
        else:
            seen.append((type(event).__name__, getattr(event, "payload", getattr(event, "code", None))))
            if isinstance(event, CloseConnection):
                break  # the reader returns at it
    return seen


def reader(limit: int = 1 << 20) -> tuple[Connection, list[bytes]]:
    """A connection with no socket, to be fed reads (`_events`), and what it gave wsproto."""
    ws = WSConnection(ConnectionType.SERVER)
    conn = Connection(None, ws, Config(), {}, "x")  # type: ignore[arg-type]
    given: list[bytes] = []
    receive = ws.receive_data
    ws.receive_data = lambda data: (given.append(data), receive(data))  # type: ignore[method-assign]
    return conn, given


@settings(max_examples=400, deadline=None)
@given(
    frames=st.lists(client_frames(), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=6),
    limit=st.sampled_from([125, 4096, 1 << 20]),
)
def test_a_reader_whose_reads_cut_its_peers_frames_anywhere_reads_what_wsproto_reads_of_them_whole(
    frames: list[tuple[bytes, str | None]], cuts: list[int], limit: int
) -> None:
    """The reader's events (its fast path, wsproto for the rest), however the stream is cut
    into reads, are wsproto's of the stream in one piece; each byte is given to wsproto once
    at most, and between reads the reader holds no more than a header's start."""
    data = b"".join(raw for raw, _text in frames)
    bounds = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})
    conn, given_to_wsproto = reader(limit)
    read: list[Event] = []
    for start, end in itertools.pairwise(bounds):
        for event in conn._events(data[start:end], limit):
            read.append(event)
            if isinstance(event, CloseConnection):
                break  # as the reader returns
        else:
            assert len(conn._partial) <= 13
            continue
        break
    whole = WSConnection(ConnectionType.SERVER)
    whole.receive_data(data)
    assert messages_of(read) == messages_of(whole.events())
    assert sum(map(len, given_to_wsproto)) <= len(data)


def test_the_fast_path_takes_every_whole_small_text_frame_and_wsproto_each_other_frame_alone() -> None:
    """A client sending fast has a frame cut by most reads (under a backlog, 64 KB reads).
    wsproto (9 times dearer a frame) is given only such a frame, in its two parts, and the
    pings, each alone; after each, the fast path goes on."""
    conn, given_to_wsproto = reader()
    ping = frame(Opcode.PING, b"p", mask=True)
    frames = [frame(Opcode.TEXT, f'{{"n":{n:>{n % 300}}}}'.encode(), mask=True) for n in range(500)]
    frames = [f for n, text in enumerate(frames) for f in ([text, ping] if n % 50 == 0 else [text])]
    data, size = b"".join(frames), 1000
    reads = [data[start : start + size] for start in range(0, len(data), size)]
    read = [event for chunk in reads for event in conn._events(chunk, 1 << 20)]
    texts = [str(text) for kind, text in messages_of(read) if kind == "TextMessage"]
    assert [int(text.split(":")[1].rstrip("}")) for text in texts] == list(range(500))
    expected, start = [], 0
    for raw in frames:
        first = size - start % size  # of it in the read it starts in
        if first < len(raw) and first >= (4 if raw[1] & 0x7F == 126 else 2):  # its two parts
            expected += [raw[:first], raw[first:]]
        elif raw == ping:  # (a header cut short waits for the next read: the frame goes whole)
            expected.append(ping)
        start += len(raw)
    assert given_to_wsproto == expected and len(expected) < 0.3 * len(frames)


def sent_and_read(conn: Connection, peer: Peer, data: bytes) -> None:
    """Send `data` as one read of the connection's reader: wait until it has read it (or is
    closing)."""
    seen = conn.last_seen
    peer.sock.sendall(data)
    while conn.last_seen == seen and not conn.closing:
        gevent.sleep(0.001)


def test_a_read_that_makes_no_event_counts_against_the_frame_budget(open_: Open) -> None:
    """wsproto holds a ping (or a header) until it is whole, so a client trickling one a byte a
    read cost up to 131 reads per frame the budget counted. A read that makes no event counts
    as a frame: a budget of 5 closes such a client (1008, `flood`) at its sixth byte, not after
    the ping's 106."""
    conn, peer = open_(frame_rate_limit=5)
    conn.start_writer()
    data = frame(Opcode.PING, b"p" * 100, mask=True)
    sent = 0
    with gevent.Timeout(TIMEOUT):
        while sent < len(data) and not conn.closing:
            sent_and_read(conn, peer, data[sent : sent + 1])
            sent += 1
        assert conn.closing and sent == 6
        events, code = peer.until_close()
    assert code == CloseCode.POLICY and events[-1]["code"] == ErrorCode.FLOOD


def test_a_message_cut_by_reads_costs_a_token_a_read_not_two(open_: Open) -> None:
    """Each read of a message's payload makes an event (part of it), which the budget counts;
    such a read is not counted again as one that made none: a budget of 5 takes a message
    that comes in 5 reads, and the connection stays open."""
    conn, peer = open_(frame_rate_limit=5)
    conn.start_writer()
    data = frame(Opcode.TEXT, b"x" * 500, mask=True)
    with gevent.Timeout(TIMEOUT):
        for at in range(0, len(data), 102):
            sent_and_read(conn, peer, data[at : at + 102])
        while not conn.data["received"] and not conn.closing:
            gevent.sleep(0.001)
    assert conn.data["received"] == ["x" * 500] and not conn.closing


def test_with_deflate_each_read_of_a_messages_bytes_makes_an_event() -> None:
    """The frame budget counts a read that makes no event: with permessage-deflate on (wsproto
    parses it all) each read of a compressed message's bytes still makes one, as without, so
    a big message cut by reads costs no more of the budget."""
    deflate = PerMessageDeflate()
    deflate.finalize("permessage-deflate")
    conn = Connection(None, WSConnection(ConnectionType.SERVER, [deflate]), Config(), {}, "x")  # type: ignore[arg-type]
    text = "".join(f"{n:x} {n * 7919 % 104729} " for n in range(3000))  # 30 KB, compressed to 16
    compressor = zlib.compressobj(wbits=-15)
    body = compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    data = frame(Opcode.TEXT, body[:-4], rsv1=True, mask=True)
    per_read = [list(conn._events(data[at : at + 1400], 1 << 20)) for at in range(0, len(data), 1400)]
    assert len(per_read) > 3 and all(per_read)
    assert "".join(event.data for events in per_read for event in events) == text


def test_a_frame_trickled_a_byte_a_read_makes_events_as_it_comes_and_is_looked_at_once() -> None:
    """A read inside a frame's payload makes an event (each counts against the frame budget),
    and no read looks again at what an earlier one gave (a frame of 16 KB a byte a read is
    16,384 reads, not 16,384 times what came before)."""
    conn, given_to_wsproto = reader()
    data = frame(Opcode.TEXT, "é".encode() * 1000, mask=True)
    silent, read = 0, []
    for at in range(len(data)):
        events = list(conn._events(data[at : at + 1], 1 << 20))
        silent += not events
        read += events
    assert silent <= 8 + 2 * 1 and sum(map(len, given_to_wsproto)) == len(data)
    assert "".join(event.data for event in read) == "é" * 1000
