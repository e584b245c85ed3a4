"""The load generator: N WebSocket clients in one thread, driven by one epoll loop. There are
no greenlets: a ready socket costs one recv and a few regex scans, so the generator spends
far less per delivery than the server it measures (run.py reports both CPUs to show it).

Every message's text carries its sender, number and send time (`b<s>.<k> <t>`); every
delivery is checked:
- chat: the room numbers its messages (`"id":"N"`), so each client must see every id once
  and in order. A frame's ids are checked at once (they follow on from the last id seen
  and rise by one); only a frame that fails that is walked id by id to count the repeats
  (doubled) and the holes (missing).
- plain (the baseline echoes text as is, one message per frame): in order per sender.
Latency is the time the data reached the client's socket minus the send time in the text.
The arrival time is the kernel's (SO_TIMESTAMPNS: when the last segment of that read came
in), so time the generator itself takes to get to a socket does not count against the
server; for earlier messages in the same read it errs on the high side. One frame in
LATENCY_SAMPLE per client is timed, every message in it (`Loop.sample`: 1 times every frame,
for a load of few messages per client).
"""

from __future__ import annotations

import base64
import errno
import os
import re
import select
import socket
import struct
import time
import zlib
from collections.abc import Callable
from operator import lt

from chatapp.realtime.framing import Opcode, frame, header

MESSAGE_ID = re.compile(rb'"id":"(\d+)"')  # a message's id; user ids start with a letter
SENT_AT = re.compile(rb" (\d+\.\d+)\"")  # the send time at the end of a chat message's text
MARK = re.compile(rb"b(\d+)\.(\d+) (\d+\.\d+)")  # the whole mark of a plain message
LATENCY_SAMPLE = 4
RECV_SIZE = 262144
SO_TIMESTAMPNS = 35  # Linux (asm-generic); Python's socket module does not name it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile of an ascending list (nearest rank); nan when it is empty."""
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


class Loop:
    """The clients' one epoll loop. `run(until, timeout)` serves every socket until `until()`
    is true (checked after each poll, at least every `tick` seconds) or `timeout` passes."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.clients: dict[int, BenchClient] = {}
        self.last_frame = time.monotonic()  # when any client last got a frame
        self.scratch = memoryview(bytearray(RECV_SIZE))  # every recv lands here: no allocation per call
        self.sample = LATENCY_SAMPLE  # one frame in this many per client is timed (1: every one)
        self.pings = 0  # pings the server sent (each answered)

    def run(self, until: Callable[[], bool], timeout: float, tick: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for fd, mask in self.epoll.poll(min(tick, left), 4096):
                client = self.clients.get(fd)
                if client is None:
                    continue
                if mask & select.EPOLLOUT:
                    client.writable()
                if mask & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                    client.readable()
        return True

    def wait_quiet(self, clients: list[BenchClient], still: float, limit: float) -> None:
        """Serve until every client is welcomed and no frame came for `still` seconds."""
        if not self.run(
            lambda: time.monotonic() - self.last_frame >= still and all(c.welcomed or not c.open for c in clients),
            limit,
        ):
            raise SystemExit("the clients never settled")

    def close(self, clients: list[BenchClient]) -> None:
        for client in clients:
            client.close()


class BenchClient:
    __slots__ = (
        "buf",
        "delivered",
        "dups",
        "frames",
        "gaps",
        "got",
        "inflater",
        "lat",
        "loop",
        "next_id",
        "open",
        "out",
        "protocol",
        "received",
        "request",
        "sock",
        "state",
        "upgraded_at",
        "welcomed",
    )

    def __init__(
        self, loop: Loop, host: str, port: int, path: str, protocol: str, senders: int, deflate: bool = False
    ) -> None:
        """Start connecting (non-blocking); the loop does the handshake. With `deflate`, offer
        permessage-deflate, as browsers do. Protocol `http`: a plain GET instead, on a
        connection of its own, over once the head of the answer is in (`welcomed`: a 200)."""
        self.loop = loop
        self.protocol = protocol
        key = base64.b64encode(os.urandom(16)).decode()
        offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        ).encode()
        if protocol == "http":
            self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        self.inflater: zlib._Decompress | None = None  # when the server agreed to deflate
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        error = self.sock.connect_ex((host, port))
        if error not in (0, errno.EINPROGRESS):
            raise OSError(error, os.strerror(error))
        self.state = "connecting"  # then "handshake", "open", "closed"
        self.open = True
        self.upgraded_at = 0.0
        self.buf = bytearray()
        self.received = 0  # bytes, after the handshake
        self.out = b""
        self.frames = 0
        self.welcomed = protocol == "plain"  # the baseline sends no welcome
        self.got = [0] * senders  # plain: per sender, the next number expected
        self.next_id = 0  # chat: the next message id expected (0: take the first one seen)
        self.delivered = 0  # messages received once (holes aside)
        self.dups = 0
        self.gaps = 0
        self.lat: list[float] = []
        loop.clients[self.sock.fileno()] = self
        loop.epoll.register(self.sock.fileno(), select.EPOLLOUT)

    # -- the loop's calls ---------------------------------------------------------------------
    def writable(self) -> None:
        if self.state == "connecting":
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.close()
                return
            self.state = "handshake"
            self.out = self.request
        try:
            sent = self.sock.send(self.out)
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.loop.epoll.modify(self.sock.fileno(), select.EPOLLIN)

    def readable(self) -> None:
        scratch = self.loop.scratch
        try:
            size, ancillary, _, _ = self.sock.recvmsg_into([scratch], 64)
        except BlockingIOError:
            return
        except OSError:
            size = 0
        if not size:
            self.close()
            return
        self.received += size
        if ancillary:  # (SOL_SOCKET, SO_TIMESTAMPNS, struct timespec)
            seconds, nanoseconds = struct.unpack_from("qq", ancillary[0][2])
            arrived = seconds + nanoseconds * 1e-9
        else:
            arrived = time.time()
        self.buf += scratch[:size]
        if self.state == "handshake":
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if self.protocol == "http":
                self.welcomed = self.buf.startswith(b"HTTP/1.1 200")
                self.upgraded_at = time.monotonic()
                self.close()
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.close()
                return
            if b"permessage-deflate" in self.buf[:end].lower():
                self.inflater = zlib.decompressobj(-15)
            del self.buf[: end + 4]
            self.state = "open"
            self.upgraded_at = time.monotonic()
        pos = self._frames(arrived)
        del self.buf[:pos]

    # -- sending ------------------------------------------------------------------------------
    def say(self, sender: int, seq: int) -> None:
        text = f"b{sender}.{seq} {time.time():.6f}"
        if self.protocol == "chat":
            text = '{"type":"message","text":"' + text + '"}'
        self.send(frame(Opcode.TEXT, text.encode(), mask=True))

    def send(self, frame: bytes) -> None:
        if not self.open:
            return
        if not self.out:
            try:
                sent = self.sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close()
                return
            frame = frame[sent:]
            if not frame:
                return
            self.loop.epoll.modify(self.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
        self.out += frame

    def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.open = False
        self.loop.clients.pop(self.sock.fileno(), None)
        try:
            self.loop.epoll.unregister(self.sock.fileno())
        except (OSError, ValueError):
            pass
        self.sock.close()

    # -- receiving ----------------------------------------------------------------------------
    def _frames(self, arrived: float) -> int:
        buf = self.buf
        pos, end = 0, len(buf)
        while (found := header(buf, pos)) is not None and found[2] <= end:
            first, start, pos = found
            opcode, compressed = first & 0x0F, first & 0x40
            payload = bytes(buf[start:pos])
            if compressed and self.inflater is not None:  # RSV1: permessage-deflate
                payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
            self.frames += 1
            if opcode != 0x9:  # quiet: no event came (pings go on, a few connections a second)
                self.loop.last_frame = time.monotonic()
            if opcode == 0x1:
                if self.protocol == "chat":
                    self._chat(payload, arrived)
                else:
                    self._plain(payload, arrived)
            elif opcode == 0x9:  # ping: pong with the same payload
                self.loop.pings += 1
                self.send(frame(Opcode.PONG, payload, mask=True))
            elif opcode == 0x8:
                self.open = False
        return pos

    def _chat(self, payload: bytes, arrived: float) -> None:
        ids = MESSAGE_ID.findall(payload)
        if not self.welcomed:  # the first frame is the welcome; its history sets the start
            self.welcomed = True
            self.next_id = int(ids[-1]) + 1 if ids else 0
            return
        if not ids:
            return  # join, leave, typing
        numbers = list(map(int, ids))
        first, count = numbers[0], len(numbers)
        expected = self.next_id or first
        if first == expected and numbers[-1] - first == count - 1 and all(map(lt, numbers, numbers[1:])):
            self.delivered += count
            self.next_id = first + count
        else:
            for number in numbers:
                if number < expected:
                    self.dups += 1
                    continue
                self.gaps += number - expected
                self.delivered += 1
                expected = number + 1
            self.next_id = expected
        if not self.frames % self.loop.sample:
            self.lat += [arrived - float(sent) for sent in SENT_AT.findall(payload)]

    def _plain(self, payload: bytes, arrived: float) -> None:
        got = self.got
        for sender, seq, sent in MARK.findall(payload):
            sender, seq = int(sender), int(seq)
            expected = got[sender]
            if seq < expected:
                self.dups += 1
                continue
            self.gaps += seq - expected
            got[sender] = seq + 1
            self.delivered += 1
            if not self.frames % self.loop.sample:
                self.lat.append(arrived - float(sent))


def connect_all(
    loop: Loop,
    host: str,
    port: int,
    path: Callable[[int], str],
    protocol: str,
    n: int,
    senders: int,
    at_once: int,
    deflate: bool = False,
) -> list[BenchClient]:
    """Open `n` clients (client i at `path(i)`), up to `at_once` handshakes in flight."""
    clients: list[BenchClient] = []
    while len(clients) < n:
        batch = [
            BenchClient(loop, host, port, path(len(clients) + i), protocol, senders, deflate)
            for i in range(min(at_once, n - len(clients)))
        ]
        clients += batch
        if not loop.run(lambda b=batch: all(c.state not in ("connecting", "handshake") for c in b), 120):
            raise SystemExit("handshakes did not finish in 120 s")
    failed = sum(1 for c in clients if c.state != "open")
    if failed:
        raise SystemExit(f"{failed} of {n} clients failed to connect")
    return clients


def request_all(loop: Loop, host: str, port: int, path: str, n: int, at_once: int) -> list[BenchClient]:
    """`n` GETs of `path`, each on a connection of its own (as each WebSocket handshake is), up
    to `at_once` in flight; SystemExit unless every one is answered 200."""
    requests: list[BenchClient] = []
    while len(requests) < n:
        batch = [BenchClient(loop, host, port, path, "http", 0) for _ in range(min(at_once, n - len(requests)))]
        requests += batch
        if not loop.run(lambda b=batch: all(r.state == "closed" for r in b), 120):
            raise SystemExit("requests did not finish in 120 s")
    failed = sum(1 for r in requests if not r.welcomed)
    if failed:
        raise SystemExit(f"{failed} of {n} requests were not answered 200")
    return requests
