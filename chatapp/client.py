"""One WebSocket client: its bounded send queue, its reader and its writer.

Greenlets of a connection:
- the reader is the greenlet gunicorn gave the upgrade request. `read_pump` is the only code
  that reads the socket and the only caller of wsproto's `receive_data`.
- the writer runs `_write_pump`, the only code that writes the socket (events, pings, pongs,
  the close frame) and the only caller of wsproto's `send`. It runs while the client is
  active: it waits on the queue (no timer), and when a PING from the Hub's ticker finds that
  it wrote nothing since the previous one, it pings and ends, so an idle client costs no
  greenlet stack; `offer` starts a new one when it is not running. Never more than one.
  Its `_write` sends until every byte is out (a non-blocking send, then gevent's `sendall`),
  and nobody else writes, so frames are whole and never interleaved (simple-websocket's
  `send` uses a bare `sock.send`, which can write part of a frame to a slow client, and its
  own thread writes pongs beside the app; we use neither: see realtime.py).

State and its owners:
- `_queue`: items are put by the Hub (fan-out), by `send` (to this client only) from any
  greenlet, and by the reader (pongs); only the writer takes them. Bounded: a put that
  finds it full means the client reads too slowly, and it is closed with 1013.
- `rooms`: the Hub's (hub.py). `data` and `info`: the app's handlers' (`info` is what other
  members see, through presence).
- `_close_request`: set once, by any greenlet, through `close`; read by the writer.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

import gevent
from gevent.event import Event
from gevent.hub import Waiter, get_hub
from gevent.queue import Full
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from .config import Config
from .framing import Batch, Opcode, frame, message_frame, render
from .hub import PING
from .metrics import ERRORS, Stats
from .protocol import CloseCode, ErrorCode, encode, error_event

log = logging.getLogger(__name__)

RECV_BYTES = 65536
CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's close frame after ours
_WAKE = object()  # a queue item that only wakes the writer, so it sees a close request


class _Pong:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class _Echo:
    """A whole frame written as it is, never joined with others (the echo route's)."""

    __slots__ = ("frame",)

    def __init__(self, frame: bytes) -> None:
        self.frame = frame


class WriteTimeout(Exception):
    """A write did not finish within WRITE_TIMEOUT."""


class SendQueue:
    """A client's bounded send queue: any greenlet puts (never blocking), one greenlet (the
    writer) takes. Built on gevent's Waiter rather than gevent.queue.Queue, which serves any
    number of getters and putters: a handoff to a waiting writer costs about 4 us here against
    8-10 us, and a message to a room of 1,000 is 1,000 handoffs."""

    __slots__ = ("_items", "_limit", "_waiter")

    def __init__(self, limit: int) -> None:
        self._items: deque[object] = deque()
        self._limit = limit
        self._waiter: Waiter | None = None  # set while the writer waits

    def put_nowait(self, item: object) -> None:
        """Queue `item`, or raise gevent.queue.Full."""
        if len(self._items) >= self._limit:
            raise Full
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            get_hub().loop.run_callback(waiter.switch, None)

    def take(self, wait: bool) -> list[object]:
        """Everything queued, oldest first; with `wait`, wait until there is something."""
        while wait and not self._items:
            self._waiter = Waiter()
            try:
                self._waiter.get()
            finally:
                self._waiter = None
        items = list(self._items)
        self._items.clear()
        return items

    def clear(self) -> None:
        self._items.clear()

    def empty(self) -> bool:
        return not self._items

    def __len__(self) -> int:
        return len(self._items)


class Connection:
    def __init__(
        self,
        sock: socket.socket,
        ws: WSConnection,
        config: Config,
        args: dict[str, str],
        remote_addr: str,
        stats: Stats | None = None,
    ) -> None:
        """`stats`: where the reader and writer count what they do (the Hub's)."""
        self.id = "c" + secrets.token_hex(6)
        self.args = args  # the handshake's query parameters
        self.remote_addr = remote_addr
        self.rooms: set[str] = set()
        self.data: dict[str, Any] = {}
        self.info: dict[str, Any] = {"id": self.id}  # what others see of it; the app may add
        self.last_seen = monotonic()  # when the peer last sent anything (reader writes it)
        self._sock = sock
        self._ws = ws
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Whole frames go out in one sendall: let them leave at once, not after an ACK
            # (Nagle's algorithm would hold a small frame back by up to the peer's 40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._config = config
        self._stats = stats or Stats()
        # permessage-deflate for what we send, when the handshake agreed it (WS_DEFLATE=1 and the
        # client offered) with our full 32 KB window (a client may ask for a smaller one: then
        # we send uncompressed, as RFC 7692 allows). wsproto keeps the agreed extensions in its
        # frame protocol, and has no public getter.
        self._deflate = ws is not None and any(
            isinstance(e, PerMessageDeflate) and e.server_max_window_bits == 15 for e in ws._proto.extensions
        )
        self._queue = SendQueue(config.send_queue_size)
        # Before the writer starts (while the connect handler runs), what is sent to this client
        # alone (`send`: the welcome) waits in `_first`, what the Hub offers in `_greeting`;
        # the writer writes `_first` first. None once the writer runs.
        self._first: list[Batch] = []
        self._greeting: list[Batch] | None = []
        self._close_request: tuple[int, str, bytes | None] | None = None
        self.closed_by_peer = False  # the peer's close frame came first (its code and reason)
        self._floor: int | None = None  # skip events with seq <= this (set by skip_through)
        self._peer_closed = Event()
        self._writer: Any = None  # the running writer greenlet (gevent.spawn_raw), if any
        self._writer_idle = Event()  # set while no writer runs
        self._writer_idle.set()
        self._dead = False  # the writer is over for good (socket shut down or reset): no more writers

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.remote_addr}>"

    # -- any greenlet -----------------------------------------------------------------------
    def offer(self, item: Batch | object) -> bool:
        """Queue a Batch (or PING, or a pong) without blocking. False when the queue was full:
        the client is then closing with 1013 (too slow) and should be forgotten by its rooms."""
        if self._dead:  # the socket is gone; the reader is ending, and unregisters it
            return True
        try:
            if self._greeting is None:
                self._queue.put_nowait(item)
                if self._writer is None and not self._dead:
                    self._start_writer([])
            elif item is PING:
                pass  # the writer has not started yet: nothing to ping about
            elif self._held() < self._config.send_queue_size:
                self._greeting.append(item)  # type: ignore[arg-type]
            else:
                raise Full
        except Full:
            if not self.closing:
                log.info(
                    "drop %s: its send queue is full",
                    self.id,
                    extra={"event": "drop", "conn": self.id, "addr": self.remote_addr, "cause": "slow"},
                )
            self.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.TOO_SLOW, "you read too slowly")
            return False
        return True

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
        if self._greeting is not None and self._held() < self._config.send_queue_size:
            self._first.append(batch)
        else:
            self.offer(batch)  # queued; or, before the writer starts, over the bound: too slow

    def _held(self) -> int:
        """Batches held before the writer starts; they count against SEND_QUEUE_SIZE."""
        return len(self._first) + len(self._greeting or ())

    def skip_through(self, seq: int) -> None:
        """This client already has every event of its room numbered up to `seq` (say, from
        history sent in its welcome): drop such events still on their way, or published late by
        another worker. Set once, before the writer starts."""
        self._floor = seq

    def error(self, code: ErrorCode, detail: str) -> None:
        self.send(error_event(code, detail))

    def close(self, code: int, error: ErrorCode | None = None, detail: str = "") -> None:
        """End the connection: the writer sends what is queued (nothing when the client was too
        slow), then the `error` event if given, then a close frame with `code` and `detail`.
        The first request wins."""
        if self._close_request is not None:
            return
        farewell = None
        if error is not None:
            farewell = encode(error_event(error, detail))
            ERRORS.labels(str(error)).inc()
        self._close_request = (code, detail, farewell)
        if code == CloseCode.TRY_AGAIN_LATER:
            self._queue.clear()  # the client cannot take them anyway
            if self._greeting:
                self._greeting.clear()
            self._first.clear()
        if self._greeting is not None:
            return  # the writer has not started; it will see the request first thing
        if self._writer is None and not self._dead:
            self._start_writer([])
        else:
            try:
                self._queue.put_nowait(_WAKE)
            except Full:
                pass  # the writer is busy with a full queue and will see the request after it

    @property
    def queued(self) -> int:
        """Items waiting for the writer."""
        return len(self._queue) + self._held()

    @property
    def closing(self) -> bool:
        return self._close_request is not None

    @property
    def close_reason(self) -> tuple[int, str] | None:
        """The close code and reason asked for (by us, or echoed to the peer), if any."""
        return None if self._close_request is None else self._close_request[:2]

    # -- the writer greenlet ------------------------------------------------------------------
    def start_writer(self) -> None:
        """End the connect phase: what was sent to this client alone goes out first, then what
        the Hub offered meanwhile, in one frame."""
        greeting = self._first + (self._greeting or [])
        self._first, self._greeting = [], None
        if greeting or self._close_request is not None:
            self._start_writer(greeting)

    def _start_writer(self, greeting: list[Batch]) -> None:
        self._writer_idle.clear()
        self._writer = gevent.spawn_raw(self._write_pump, greeting)

    def _write_pump(self, greeting: list[Batch]) -> None:
        """The writer: the only code that writes this socket. Ends after a ping interval with
        nothing to write (the next offer starts another), or for good after the close frame, on
        a write error or timeout, or when the peer has been silent too long; then it shuts the
        socket down so the reader wakes up too. Not when the peer reset the connection: the
        kernel wakes the reader then, and it must first read what the peer sent before it went
        (a last message and a close: a shutdown here would throw them away)."""
        over, shutdown = True, True
        try:
            over = self._write_loop(greeting)
        except ConnectionError as exc:  # reset or broken pipe: the peer is gone
            log.debug("%r: write failed: %r", self, exc)
            shutdown = False
            gevent.spawn_later(CLOSE_TIMEOUT, self._shutdown_socket)  # should the reader still wait
        except (OSError, WriteTimeout) as exc:
            log.debug("%r: write failed: %r", self, exc)
        except Exception:
            log.exception("%r: writer failed", self)
        finally:
            if over:
                self._dead = True
                if shutdown:
                    self._shutdown_socket()
            self._writer = None
            self._writer_idle.set()

    def _write_loop(self, greeting: list[Batch]) -> bool:
        """Write until the client has been idle for a ping interval (False: this writer ends,
        the next offer starts another) or the connection is over (True)."""
        queue = self._queue
        silence_limit = self._config.ping_interval + self._config.pong_timeout
        items: list[object] = greeting.copy()
        greeting.clear()  # held by the caller's frame for the writer's life: keep nothing in it
        wrote = True  # since the last PING
        while True:
            # no timer: the Hub's ticker sends PING
            items += queue.take(wait=not items and self._close_request is None)
            data = self._render(items)
            events, idle = bool(data), False
            if PING in items:
                silent = monotonic() - self.last_seen
                if silent > silence_limit:
                    log.info(
                        "drop %s: no answer for %.0f s",
                        self.id,
                        silent,
                        extra={"event": "drop", "conn": self.id, "addr": self.remote_addr, "cause": "silent"},
                    )
                    return True
                idle, wrote = not (wrote or events), False  # idle: nothing for a ping interval
                if self._ws.state is ConnectionState.OPEN:
                    data += self._ws.send(Ping())
                    self._stats.frames += 1
            wrote = wrote or events
            request = self._close_request
            if request is not None and queue.empty():
                code, detail, farewell = request
                if farewell is not None:
                    data += frame(Opcode.TEXT, farewell)
                    self._stats.frames += 1
                if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                    data += self._ws.send(CloseConnection(code, detail or None))
                    self._stats.frames += 1
                self._write(data)
                self._peer_closed.wait(CLOSE_TIMEOUT)
                return True
            if data:
                self._write(data)
            if idle and queue.empty() and self._close_request is None:
                return False
            items, data = [], b""  # while it waits, a writer holds no frame (the welcome is big)

    def _render(self, items: list[object]) -> bytes:
        """Turn queued items into bytes: all events in one frame (framing.render), then pongs."""
        batches = [item for item in items if type(item) is Batch]
        data = render(batches, self._deflate, self._floor) if batches else b""
        frames = 1 if data else 0
        for item in items:
            if type(item) is _Pong and self._ws.state is ConnectionState.OPEN:
                data += self._ws.send(Pong(item.payload))
                frames += 1
            elif type(item) is _Echo:
                data += item.frame
                frames += 1
        self._stats.frames += frames
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

    # -- the reader (the request's greenlet) --------------------------------------------------------
    def read_pump(self, on_message: Callable[[Connection, str | bytes], None]) -> None:
        """The reader: the only code that reads this socket. Hands each whole message to
        `on_message`; answers pings through the writer; returns when the connection is over."""
        sock, ws, limit = self._sock, self._ws, self._config.max_frame_bytes
        parts: list[Any] = []
        size = 0
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
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
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
                    violation = ws.state is ConnectionState.OPEN
                    self.closed_by_peer = not violation and self._close_request is None
                    self._peer_closed.set()
                    self.close(event.code, detail=event.reason or ("protocol error" if violation else ""))
                    return

    def end(self) -> None:
        """After the reader has returned: let the writer finish (bounded), then drop the socket."""
        self.close(CloseCode.NORMAL)
        if not self._writer_idle.wait(self._config.write_timeout + CLOSE_TIMEOUT):
            gevent.kill(self._writer, block=False)
        self._shutdown_socket()
