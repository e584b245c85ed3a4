"""One WebSocket client: its bounded send queue, its reader and its writer.

Greenlets of a connection:
- the reader is the connection's session greenlet (session.py), started once the handshake
  is answered. `read_pump` is the only code that reads the socket, and it (through its
  `_events`) the only caller of wsproto's `receive_data`.
- writes: an event offered while no writer runs and nothing waits is written at once by the
  greenlet that offers it (the Hub's, or the reader's as it ends the connect phase), in one
  non-blocking send, which never switches (`_write_now`); what the kernel does not take, and
  everything else (pings, pongs, the close frame, events that come while one waits), goes
  through the queue to the writer, a greenlet that runs `_write_pump` until the queue is
  empty: `_write` sends until every byte is out (a non-blocking send, then gevent's
  `sendall`). `_writer` names it; never two. Only these write the socket, and only the
  writer calls wsproto's `send`, so frames are whole and never interleaved
  (simple-websocket's `send` uses a bare `sock.send`, which can write part of a frame to a
  slow client, and its own thread writes pongs beside the app; we use neither: see
  endpoint.py). When they run: Connection's docstring.

State and its owners:
- `state`: moved by `start_writer` (the reader's greenlet), `close` (any greenlet) and the
  writer, always through `_move`.
- `_queue`: items are put by the Hub (fan-out), by `send` and `echo` (to this client only)
  from any greenlet, and by the reader (pongs); only the writer takes them. `_unsent`: the
  rest of a frame `_write_now` began, put by it, written first by the writer it starts. Bounded: a put
  that finds it full means the client reads too slowly, and it is closed with 1013.
- `rooms`: the Hub's (hub.py). `data` and `info`: the app's handlers' (`info` is what other
  members see, through presence).
- `_close`: set once, by any greenlet, through `close`; read by the writer.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable, Iterator
from enum import Enum
from time import monotonic
from typing import Any, NamedTuple

import gevent
from gevent.event import Event
from gevent.queue import Full
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState as WSState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from ..config import Config
from ..ratelimit import RateLimiter
from .framing import Batch, Opcode, frame, header, message_frame, render, render_lines, whole_texts
from .hub import PING, PingTick
from .metrics import ERRORS, Stats
from .protocol import CloseCode, ErrorCode, encode, error_event

log = logging.getLogger(__name__)

RECV_BYTES = 65536
CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's close frame after ours
FRAME_WINDOW = 10.0  # FRAME_RATE_LIMIT counts a client's frames per this many seconds
# Frames the reader handles before it lets the other greenlets run. Under a backlog (reads of
# many frames) it sets how many messages a transaction and a Hub round hold: in `bench ingest`
# 16 made rounds of 157 messages and 128 rounds of 400, and the worker took in more (a send to
# each member and a commit cost about the same for a round of 10 messages as for one of 500).
# A turn is up to about 1 ms of chat messages, 2.3 ms of pings (wsproto's). The price, where the
# frame budget lets a client send more than 128 frames at once: a client flooding cheap frames
# delays the others more (`bench flood`, the budget off: a talking pair's p99 beside two
# flooders 8-11 ms at 16, 15 ms at 64, 21-29 ms at 128). Under the default budget (a bucket of
# 100 frames, refilled at 10 a second) a turn holds at most 100.
TURN_EVERY = 128


class State(Enum):
    """Where a Connection is in its life; its docstring has the transitions."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# The states by bare name: `State.OPEN` is a lookup through the enum's metaclass (80 ns), and
# `offer` tests the state once per client per batch.
CONNECTING, OPEN, CLOSING, CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED
_NEXT = {CONNECTING: (OPEN, CLOSING), OPEN: (CLOSING, CLOSED), CLOSING: (CLOSED,), CLOSED: ()}


class _Pong:
    """A queue item: answer the peer's ping."""

    __slots__ = ("payload", "size")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.size = len(payload)


class _Echo:
    """A queue item: a whole frame written as it is, never joined with others (the echo route's)."""

    __slots__ = ("frame", "size")

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.size = len(frame)


Outgoing = Batch | PingTick | _Pong | _Echo  # what a send queue holds


def _between_frames(ws: WSConnection) -> bool:
    """Whether wsproto holds nothing of a frame, and no extension is on: where the reader may
    find the next frame's bounds itself (framing.header) and give it to wsproto alone. Read
    from wsproto's parser (pinned in requirements.txt), which has no public getter for it.
    Not asked after a close frame or a protocol error: the reader returns at that event."""
    proto = ws._proto
    decoder = proto._frame_decoder
    return ws.state is WSState.OPEN and not proto.extensions and decoder.header is None and not decoder.buffer.buffer


def _between_messages(ws: WSConnection) -> bool:
    """Between frames, and of no fragmented message either: where the reader may parse whole
    text frames itself (framing.whole_texts)."""
    return _between_frames(ws) and ws._proto._message_decoder.opcode is None


def _deflate_agreed(ws: WSConnection) -> bool:
    """Whether we compress what we send (permessage-deflate): the handshake agreed it (WS_DEFLATE=1
    and the client offered) with our full 32 KB window (a client may ask for a smaller one: then
    we send uncompressed, as RFC 7692 allows). wsproto keeps the agreed extensions in its frame
    protocol, and has no public getter."""
    return any(isinstance(e, PerMessageDeflate) and e.server_max_window_bits == 15 for e in ws._proto.extensions)


class CloseRequest(NamedTuple):
    code: int
    reason: str
    farewell: bytes | None  # an error event, sent just before the close frame


class WriteTimeout(Exception):
    """A write did not finish within WRITE_TIMEOUT."""


class SendQueue:
    """A client's bounded send queue: any greenlet puts (never blocking), the writer takes all
    at once. Bounded in items and in bytes (the payloads it holds: a batch grows with load, so
    a count alone would let a client that never reads pin any amount). Nobody waits on it: a
    writer runs while it holds something (Connection._run_writer)."""

    __slots__ = ("_bytes", "_items", "_limit", "_limit_bytes")

    def __init__(self, limit: int, limit_bytes: int) -> None:
        # A list, not a deque: the taker takes all at once, and an empty deque is 760 bytes
        # (its first block), a list 56: most clients' queues are empty most of the time.
        self._items: list[Outgoing] = []
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._bytes = 0  # the sizes of what it holds

    def put_nowait(self, item: Outgoing) -> None:
        """Queue `item`, or raise gevent.queue.Full (past the count, or past the bytes unless
        it is alone: one batch bigger than the bound still goes to a client that reads)."""
        if len(self._items) >= self._limit or (self._bytes + item.size > self._limit_bytes and self._items):
            raise Full
        self._bytes += item.size
        self._items.append(item)

    def take(self) -> list[Outgoing]:
        """Everything queued, oldest first."""
        items, self._items = self._items, []
        self._bytes = 0
        return items

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def empty(self) -> bool:
        return not self._items

    def __len__(self) -> int:
        return len(self._items)


class Connection:
    """One client: what the Hub and the app send it, and the pumps that move it.

    Its life, `state` (every change goes through `_move`, which checks it):

        CONNECTING -> OPEN      start_writer: the connect handler is done
        CONNECTING -> CLOSING   start_writer, when a close was asked for during the handler
        OPEN       -> CLOSING   close
        OPEN       -> CLOSED    the writer failed: a write error or timeout, a silent peer
        CLOSING    -> CLOSED    the writer is done: close frame out (or it failed)

    - CONNECTING: the connect handler runs; nothing is written. What `send` gives (the
      welcome) and what the Hub offers are held, together at most SEND_QUEUE_SIZE (past it:
      closed 1013); PING is ignored. A close request is recorded, for `start_writer`; the
      Hub's offers after it are dropped.
    - OPEN: `start_writer` has written what was held, `send`'s first, so the welcome goes out
      before any room event. An event offered is written at once when no writer runs (what
      the kernel does not take starts one), else queued (full: closed 1013, `offer` returns
      False).
    - CLOSING: the writer sends what was queued before the request, the farewell error event
      and the close frame, waits up to CLOSE_TIMEOUT for the peer's, and ends. Later offers
      are dropped.
    - CLOSED: the writer is over for good; offers are dropped, no writer starts again. It has
      shut the socket down, unless the peer reset it: the reader must first read what the
      peer sent before it went (a last message, a close), so that shutdown waits CLOSE_TIMEOUT.

    Apart from the state, a writer greenlet runs or not (`writing`). In OPEN it runs while
    there is something queued (or the rest of a frame), and ends when the queue is empty (an
    idle client costs no greenlet stack; a PING starts one that pings and ends). In CLOSING
    it runs until CLOSED. Never two: `_run_writer` is the one place that starts one.
    `close`: the first request wins; TRY_AGAIN_LATER also drops what is queued or held.
    """

    def __init__(
        self,
        sock: socket.socket,
        ws: WSConnection,
        config: Config,
        args: dict[str, str],
        remote_addr: str,
        stats: Stats | None = None,
    ) -> None:
        """`stats`: where the reader and writer count what they do (the Hub's). `sock` and
        `ws` may be None for a connection that never leaves CONNECTING (tests of the chat)."""
        self.id = "c" + secrets.token_hex(6)
        self.args = args  # the handshake's query parameters
        self.remote_addr = remote_addr
        self.rooms: set[str] = set()
        self.data: dict[str, Any] = {}
        self.info: dict[str, Any] = {"id": self.id}  # what others see of it; the app may add
        self.last_seen = monotonic()  # when the peer last sent anything (reader writes it)
        self.closed_by_peer = False  # the peer's close frame came first (its code and reason)
        self.state = CONNECTING
        self._sock = sock
        self._ws = ws
        if ws is not None:
            # wsproto keeps a deque for the events it makes itself, only on `receive_data(None)`
            # (a close with 1006), which the reader never calls: it ends at EOF. An empty deque
            # is 760 bytes (its first block), about 4% of an idle client; an empty list serves
            # `events()` (`while self._events`) as well, in 56.
            ws._events = []  # type: ignore[assignment]
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Whole frames go out in one send: let them leave at once, not after an ACK
            # (Nagle's algorithm would hold a small frame back by up to the peer's 40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._config = config
        self._stats = stats or Stats()
        self._deflate = ws is not None and _deflate_agreed(ws)
        self._queue = SendQueue(config.send_queue_size, config.send_queue_bytes)
        self._held_sent: list[Outgoing] = []  # CONNECTING: what `send` gave (the welcome)
        self._held_offered: list[Outgoing] = []  # CONNECTING: what the Hub offered
        self._close: CloseRequest | None = None
        self._seen_through: int | None = None  # the client has the events numbered up to this
        self._peer_closed = Event()  # the peer's close frame came, or its end of the socket closed
        self._writer: gevent.Greenlet | None = None  # the running writer, if any
        self._unsent = b""  # the rest of a frame `_write_now` began: the writer writes it first
        # The reader's: the start of a header the last read cut, and the bytes of a frame that
        # wsproto has the start of still to come.
        self._partial = b""
        self._inside = 0
        # A plain-text client's: each event as a line (None: not shown), set before it opens.
        self.lines: Callable[[bytes], str | None] | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.remote_addr} {self.state.name}>"

    def _move(self, to: State) -> None:
        if to not in _NEXT[self.state]:
            expected = " or ".join(state.name for state in _NEXT[self.state]) or "nothing"
            raise RuntimeError(f"{self!r}: cannot go to {to.name}; from {self.state.name} only to {expected}")
        self.state = to

    # -- any greenlet -----------------------------------------------------------------------
    def offer(self, item: Outgoing) -> bool:
        """Write or queue an item without blocking (a Batch or PING from the Hub, `send`'s and
        `echo`'s, the reader's pongs): a Batch is written at once while no writer runs
        (`_write_now`). False when it did not fit: the client is then closing with 1013 (too
        slow) and should be forgotten by its rooms. Dropped quietly once closing."""
        state = self.state
        if state is OPEN:
            if self._writer is None and type(item) is Batch:  # no writer: nothing waits to go first
                self._write_now([item])
                return True
            try:
                self._queue.put_nowait(item)
            except Full:
                return self._too_slow()
            if self._writer is None:
                self._run_writer()
        elif state is CONNECTING and item is not PING and self._close is None:  # PING: nothing is out yet
            # A close asked for while connecting (a resync, say) goes out after what was held
            # then: what came after it is dropped, as once CLOSING. A client told to resume
            # must not be shown an event past one it missed.
            if not self._can_hold(item):
                return self._too_slow()
            self._held_offered.append(item)
        return True

    def _too_slow(self) -> bool:
        if self._close is None:
            self._log_drop("slow", "its send queue is full")
        self.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.TOO_SLOW, "you read too slowly")
        return False

    def _log_drop(self, cause: str, why: str) -> None:
        extra = {"event": "drop", "conn": self.id, "addr": self.remote_addr, "cause": cause}
        log.info("drop %s: %s", self.id, why, extra=extra)

    def echo(self, message: str | bytes) -> None:
        """Send `message` back as it came: a text or a binary frame of its own, compressed when
        the client agreed permessage-deflate (the echo route, for conformance suites: the same
        queue and writer as chat events)."""
        binary = not isinstance(message, str)
        payload = message if binary else message.encode()
        self.offer(_Echo(message_frame(payload, binary=binary, deflate=self._deflate)))

    def send(self, event: dict[str, Any]) -> None:
        """Send one event to this client only. Sent from the connect handler, it goes out
        before any room event."""
        if event.get("type") == "error":
            ERRORS.labels(event.get("code", "")).inc()
        batch = Batch([encode(event)])
        if self.state is CONNECTING and self._can_hold(batch):
            self._held_sent.append(batch)
        else:
            self.offer(batch)  # queued; or, over the bound while connecting: too slow

    def _held(self) -> int:
        """Items held while CONNECTING; they count against SEND_QUEUE_SIZE."""
        return len(self._held_sent) + len(self._held_offered)

    def _can_hold(self, item: Outgoing) -> bool:
        """Whether `item` may be held while CONNECTING: what is held goes into the send queue
        at once when it opens, so it keeps to the queue's bounds, items and bytes (the first
        item alone may be bigger, as in the queue)."""
        held = self._held_sent + self._held_offered
        weight = sum(h.size for h in held) + item.size
        return len(held) < self._config.send_queue_size and (weight <= self._config.send_queue_bytes or not held)

    def skip_through(self, seq: int) -> None:
        """This client already has every event of its room numbered up to `seq` (say, from
        history sent in its welcome): drop such events still on their way, or published late by
        another worker. Only while CONNECTING (from the connect handler)."""
        if self.state is not CONNECTING:
            raise RuntimeError(f"{self!r}: skip_through is for the connect handler (CONNECTING)")
        self._seen_through = seq

    def close(self, code: int, error: ErrorCode | None = None, detail: str = "") -> None:
        """End the connection: the writer sends what is queued (nothing when the client was too
        slow), then the `error` event if given, then a close frame with `code` and `detail`.
        The first request wins."""
        if self._close is not None:
            return
        farewell = None
        if error is not None:
            farewell = encode(error_event(error, detail))
            ERRORS.labels(str(error)).inc()
        self._close = CloseRequest(code, detail, farewell)
        if code == CloseCode.TRY_AGAIN_LATER:  # the client cannot take them anyway
            self._queue.clear()
            self._held_sent.clear()
            self._held_offered.clear()
        if self.state is OPEN:  # CONNECTING: start_writer acts on it; CLOSED: too late
            self._move(CLOSING)
            self._run_writer()

    @property
    def queued(self) -> int:
        """Items waiting for the writer."""
        return len(self._queue) + self._held()

    @property
    def closing(self) -> bool:
        """A close was asked for. Not merely CLOSED: a writer that failed on a reset socket
        leaves the peer's last messages to the reader, which still hands them on."""
        return self._close is not None

    @property
    def writing(self) -> bool:
        """A writer greenlet runs."""
        return self._writer is not None

    @property
    def close_reason(self) -> tuple[int, str] | None:
        """The close code and reason asked for (by us, or echoed to the peer), if any."""
        return None if self._close is None else (self._close.code, self._close.reason)

    # -- the writer greenlet ------------------------------------------------------------------
    def start_writer(self) -> None:
        """End the connect phase (the reader's greenlet, after the connect handler): what was
        sent to this client alone goes out first, then what the Hub offered meanwhile, written
        at once (`_write_now`: no writer greenlet for the welcome)."""
        self._move(OPEN if self._close is None else CLOSING)
        held = self._held_sent + self._held_offered
        self._held_sent, self._held_offered = [], []
        if self.state is OPEN:
            if held:
                self._write_now(held)
            return
        for item in held:
            self._queue.put_nowait(item)  # it fits: held kept to the same bounds (_can_hold)
        self._run_writer()

    def _write_now(self, items: list[Outgoing]) -> None:
        """Write `items` from this greenlet, when no writer runs (nothing queued, nothing
        unsent): one non-blocking send, which never switches, so no writer can start meanwhile
        and no frame of another can come between. What the kernel does not take (a client that
        reads slowly), or a send that fails, is left to a writer started for it: it writes the
        rest first, or meets the error and ends the connection as writers do. No greenlet is
        woken for the usual event: the Hub writes a room's frame to each of its clients."""
        try:
            data = self._render(items)
        except Exception:  # a text client's `lines` (the app's render): ends it, as a writer's would
            log.exception("%r: writer failed", self)
            self._move(CLOSED)
            self._shutdown_socket()
            return
        if not data:  # the client had it all already (skip_through)
            return
        try:
            sent = self._sock.send(data, 0, 0.0)  # gevent: timeout 0.0 never waits
        except OSError:  # would block; or reset, broken: the writer finds out again
            sent = 0
        self._stats.bytes += sent
        if sent < len(data):
            self._unsent = data[sent:]
            self._run_writer()

    def _run_writer(self) -> None:
        """Start a writer when none runs (the one place that starts writers); a running one
        writes what is queued before it ends."""
        if self._writer is None:
            self._writer = gevent.spawn(self._write_pump)

    def _write_pump(self) -> None:
        """The writer: a greenlet that writes what is queued until nothing is (OPEN: the next
        offer is written at once, or starts another), or for good (CLOSED) after the close
        frame, on a write error or timeout, or when the peer has been silent too long; then it
        shuts the socket down so the reader wakes up too. Not when the peer reset the
        connection: the kernel wakes the reader then, and it must first read what the peer sent
        before it went (a last message and a close: a shutdown here would throw them away)."""
        over, shutdown = True, True
        try:
            over = self._write_loop()
        except ConnectionError as exc:  # reset or broken pipe: the peer is gone
            log.debug("%r: write failed: %r", self, exc)
            shutdown = False
            gevent.spawn_later(CLOSE_TIMEOUT, self._shutdown_socket)  # should the reader still wait
        except (OSError, WriteTimeout) as exc:
            log.debug("%r: write failed: %r", self, exc)
        except Exception:
            log.exception("%r: writer failed", self)
        finally:
            self._writer = None
            if over:
                self._move(CLOSED)
                if shutdown:
                    self._shutdown_socket()

    def _write_loop(self) -> bool:
        """Write until the connection is over (True), or, while OPEN, until nothing is left to
        write (False: this writer ends)."""
        queue = self._queue
        silence_limit = self._config.ping_interval + self._config.pong_timeout
        while True:
            # Between here and the write below nothing switches, so what is queued now goes
            # out in this write, and a close request seen below comes after all of it.
            items = queue.take()
            data = self._render(items)
            if self._unsent:  # the rest of a frame begun at once (_write_now): first
                data, self._unsent = self._unsent + data, b""
            if PING in items:
                silent = monotonic() - self.last_seen
                if silent > silence_limit:
                    self._log_drop("silent", f"no answer for {silent:.0f} s")
                    return True
                if self._ws.state is WSState.OPEN:
                    data += self._ws.send(Ping())
                    self._stats.frames += 1
            if self.state is CLOSING:
                self._write(data + self._closing_frames())
                self._peer_closed.wait(CLOSE_TIMEOUT)
                return True
            if data:
                self._write(data)  # may switch: more may be queued, or a close asked for, meanwhile
            if self.state is OPEN and queue.empty():
                return False
            del items, data  # between writes, a writer holds no frame (the welcome is big)

    def _render(self, items: list[Outgoing]) -> bytes:
        """Queued items as bytes: all events in one frame (framing.render), then pongs and echoes."""
        batches: list[Batch] = []
        controls, frames = b"", 0  # pongs and echoes: frames of their own
        for item in items:  # one pass, on the type alone: a writer in a busy room runs it for each batch
            kind = type(item)
            if kind is Batch:
                batches.append(item)  # type: ignore[arg-type]
            elif kind is _Pong and self._ws.state is WSState.OPEN:
                controls += self._ws.send(Pong(item.payload))  # type: ignore[union-attr]
                frames += 1
            elif kind is _Echo:
                controls += item.frame  # type: ignore[union-attr]
                frames += 1
        if not batches:
            data = b""
        elif self.lines is not None:
            data = render_lines(batches, self.lines, self._seen_through)
        else:
            data = render(batches, self._deflate, self._seen_through)
        self._stats.frames += frames + (1 if data else 0)
        return data + controls if controls else data

    def _closing_frames(self) -> bytes:
        """The farewell error event, if any, and our close frame, unless the close handshake is over."""
        assert self._close is not None
        code, reason, farewell = self._close
        data = b""
        if farewell is not None and self.lines is not None:
            farewell = (self.lines(farewell) or "").encode() or None
        if farewell is not None:
            data += frame(Opcode.TEXT, farewell)
            self._stats.frames += 1
        if self._ws.state in (WSState.OPEN, WSState.REMOTE_CLOSING):
            data += self._ws.send(CloseConnection(code, reason or None))
            self._stats.frames += 1
        return data

    def _write(self, data: bytes) -> None:
        """Write all of `data` or fail: one non-blocking send first (the usual case: the
        kernel takes it all), then the rest with sendall under WRITE_TIMEOUT."""
        try:
            sent = self._sock.send(data, 0, 0.0)  # gevent: timeout 0.0 never waits
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            with gevent.Timeout(self._config.write_timeout, WriteTimeout):
                self._sock.sendall(memoryview(data)[sent:])
        self._stats.bytes += len(data)

    def _shutdown_socket(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone

    # -- the reader (the session's greenlet) --------------------------------------------------------
    def read_pump(self, on_message: Callable[[Connection, str | bytes], None]) -> None:
        """The reader: the only code that reads this socket. Hands each whole message to
        `on_message`; answers pings through the writer; returns when the connection is over.

        Fair to the others: every frame the client sends (a message, a ping, anything), and
        every read that makes no event, counts against FRAME_RATE_LIMIT per FRAME_WINDOW, and one
        past it is told `flood` and closed (1008), its other frames never parsed; and at each
        read and every TURN_EVERY frames the reader lets the Hub and the writers run, so a
        client that streams frames delays the others by one turn at a time."""
        sock, ws, limit = self._sock, self._ws, self._config.max_frame_bytes
        budget = RateLimiter(self._config.frame_rate_limit, FRAME_WINDOW) if self._config.frame_rate_limit else None
        parts: list[Any] = []
        size = handled = 0
        event: Any = None
        chunk: Any = None
        message: str | bytes | None = None
        while True:
            try:
                data = sock.recv(RECV_BYTES)
            except OSError:
                data = b""
            if not data:
                self._peer_closed.set()
                self.close(CloseCode.NORMAL)
                return
            self.last_seen = monotonic()
            gevent.sleep(0)  # a client sending fast must not keep the Hub and writers waiting
            before = handled
            for event in self._events(data, limit):
                handled += 1
                if handled % TURN_EVERY == 0:
                    gevent.sleep(0)
                if budget is not None and not budget.allow() and not isinstance(event, CloseConnection):
                    self._flooded()
                    return  # the rest it sent is never read
                if type(event) is str:  # a whole text message the fast path read, within the limit
                    if not self.closing:
                        self._stats.events_in += 1
                        on_message(self, event)
                elif isinstance(event, (TextMessage, BytesMessage)):
                    if self.closing:
                        continue  # closing: only the peer's close frame matters now
                    chunk = event.data
                    size += len(chunk) if isinstance(chunk, bytes | bytearray) else len(chunk.encode())
                    if size > limit:
                        self.close(CloseCode.TOO_BIG, ErrorCode.TOO_BIG, f"a message may hold at most {limit} bytes")
                        continue
                    parts.append(chunk)
                    if event.message_finished:
                        message = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                        parts, size = [], 0
                        self._stats.events_in += 1
                        on_message(self, message)
                elif isinstance(event, Ping) and not self.closing:
                    self.offer(_Pong(event.payload))
                elif isinstance(event, CloseConnection):
                    # Still OPEN: wsproto found a protocol violation (event.code: 1002, 1007), and
                    # we fail the connection without waiting for an answer (RFC 6455 7.1.7).
                    # Otherwise it is the peer's close frame: answered now, if ours is not out.
                    violation = ws.state is WSState.OPEN
                    self.closed_by_peer = not violation and self._close is None
                    self._peer_closed.set()
                    self.close(event.code, detail=event.reason or ("protocol error" if violation else ""))
                    return
            # A read that made no event counts as a frame: wsproto holds a control frame (131
            # bytes at most) or a header until it is whole, and a client trickling them a byte a
            # read would cost the others that many reads per frame the budget counts. Not while
            # closing: the peer's close frame, cut by a read, must not make it a flooder.
            if handled == before and budget is not None and not self.closing and not budget.allow():
                self._flooded()
                return
            # While it waits for the next read, the reader holds nothing it read: not its bytes
            # (up to RECV_BYTES), nor the last event, chunk or message (up to max_frame_bytes);
            # only the start of a frame header the read cut (`_partial`, 13 bytes at most).
            event = chunk = message = data = None

    def _flooded(self) -> None:
        window = f"{self._config.frame_rate_limit} frames per {FRAME_WINDOW:.0f} s"
        self.close(CloseCode.POLICY, ErrorCode.FLOOD, f"at most {window}")

    def _events(self, data: bytes, limit: int) -> Iterator[Any]:
        """The events of `data`, a client's bytes just read, lazily (a reader that stops taking
        them parses no more). Between messages, the whole small text frames are parsed here
        (framing.whole_texts), each a message given as its str, not wsproto's event (whole, and
        within `limit`: nothing to join or to count); every other frame goes to wsproto alone,
        as it comes: a frame that `data` ends inside goes in part, and the next read gives
        wsproto the rest of it (`_inside` bytes) before anything else. So wsproto is back
        between frames after each frame, and the fast path goes on (wsproto, given the start of
        one frame and the next together, would have to be given everything while reads end
        inside frames: under a backlog, most messages, each 9 times dearer to parse). Each byte
        is looked at once, wsproto refuses what it can refuse as soon as it comes (RFC 6455's
        fail fast), and a frame given in part makes events, which count against the frame
        budget. With an extension on (deflate), wsproto parses it all."""
        ws, pos = self._ws, 0
        if self._partial:  # the start of a header, 13 bytes at most
            data, self._partial = self._partial + data, b""
        end = len(data)
        if self._inside:
            pos = min(self._inside, end)
            self._inside -= pos
            ws.receive_data(data[:pos])
            yield from ws.events()
        while pos < end and _between_frames(ws):
            if _between_messages(ws):
                for text, stop in whole_texts(data, limit, pos):
                    pos = stop
                    yield text
                if pos == end:
                    return
            bounds = header(data, pos)
            if bounds is None:  # too little of the header to tell where the frame ends
                self._partial = data[pos:]
                return
            stop = min(bounds[2], end)
            self._inside = bounds[2] - stop
            ws.receive_data(data[pos:stop])
            pos = stop
            yield from ws.events()
        if pos < end:
            ws.receive_data(data[pos:] if pos else data)
            del data
            yield from ws.events()

    def end(self) -> None:
        """After the reader has returned: let the writer finish (bounded), then drop the socket."""
        self.close(CloseCode.NORMAL)
        if self.state is CONNECTING:  # start_writer never ran: it sends what was held, then the close
            self.start_writer()
        writer = self._writer
        if writer is not None:
            writer.join(self._config.write_timeout + CLOSE_TIMEOUT)
            writer.kill(block=False)  # if it is still there
        self._shutdown_socket()
