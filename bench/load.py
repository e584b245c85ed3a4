"""The load generator: many WebSocket clients in one gevent process, with a minimal client
(handshake, masked text frames out, whole unmasked frames in) so that the generator costs far
less per delivery than the server it measures.

Every message carries its sender, sequence number and send time in its text (`b<s>.<k> <t>`),
so each delivery is checked: counted once, in order per sender, its latency taken; a repeat
or a gap is counted as doubled or missing. Works with the chat protocol (JSON events) and
with the plain baseline (raw text echoed), since both carry the text verbatim.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
import time
from collections.abc import Callable

import gevent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile of an ascending list (nearest rank); nan when it is empty."""
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


MARK = re.compile(rb"b(\d+)\.(\d+) (\d+\.\d+)")
LATENCY_SAMPLE = 8


class BenchClient:
    __slots__ = ("delivered", "dups", "frames", "gaps", "got", "lat", "latest", "open", "protocol", "sock", "welcomed")

    def __init__(self, host: str, port: int, path: str, protocol: str, senders: int) -> None:
        self.protocol = protocol
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        self.sock.settimeout(None)
        self.latest = head.split(b"\r\n\r\n", 1)[1]  # bytes after the handshake: frames
        self.open = True
        self.frames = 0
        self.welcomed = protocol == "plain"
        self.got = [0] * senders  # per sender: next sequence number expected
        self.delivered = 0  # messages received once and in order (gaps aside)
        self.dups = 0
        self.gaps = 0
        self.lat: list[float] = []

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        size = len(payload)
        header = struct.pack("!BB", 0x81, 0x80 | size) if size < 126 else struct.pack("!BBH", 0x81, 0xFE, size)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def say(self, sender: int, seq: int) -> None:
        text = f"b{sender}.{seq} {time.time():.6f}"
        if self.protocol == "chat":
            text = '{"type":"message","text":"' + text + '"}'
        self.send_text(text)

    def run(self) -> None:
        """Read frames until the connection ends; check and time every message in them."""
        buf = bytearray(self.latest)
        self.latest = b""
        sock = self.sock
        try:
            while True:
                pos = self._frames(buf)
                del buf[:pos]
                data = sock.recv(262144)
                if not data:
                    break
                buf += data
        except OSError:
            pass
        self.open = False

    def _frames(self, buf: bytearray) -> int:
        pos, end = 0, len(buf)
        while end - pos >= 2:
            size, header = buf[pos + 1] & 0x7F, 2
            if size == 126:
                if end - pos < 4:
                    break
                size, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if end - pos < header + size:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + header : pos + header + size])
            pos += header + size
            self.frames += 1
            if opcode == 0x1:
                self._text(payload)
            elif opcode == 0x9:  # ping: pong with the same payload (masked, as a client must)
                mask = os.urandom(4)
                self.sock.sendall(
                    bytes((0x8A, 0x80 | len(payload))) + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
                )
            elif opcode == 0x8:
                self.open = False
        return pos

    def _text(self, payload: bytes) -> None:
        """Check every message in a frame: once, in order per sender. Latency is sampled (one
        message in LATENCY_SAMPLE, by sequence number), which keeps the generator cheap."""
        if not self.welcomed and b'"welcome"' in payload:
            self.welcomed = True
        now = time.time()
        got, lat = self.got, self.lat
        for sender, seq, sent in MARK.findall(payload):
            sender, seq = int(sender), int(seq)
            expected = got[sender]
            if seq < expected:
                self.dups += 1
                continue
            if seq > expected:
                self.gaps += seq - expected
            got[sender] = seq + 1
            self.delivered += 1
            if not seq % LATENCY_SAMPLE:
                lat.append(now - float(sent))


def connect_all(
    host: str, port: int, path: Callable[[int], str], protocol: str, n: int, senders: int, at_once: int = 200
) -> list[BenchClient]:
    """Open `n` clients (client i at `path(i)`), `at_once` at a time; start their readers."""
    clients: list[BenchClient] = []
    for start in range(0, n, at_once):
        count = min(at_once, n - start)
        jobs = [gevent.spawn(BenchClient, host, port, path(start + i), protocol, senders) for i in range(count)]
        gevent.joinall(jobs, raise_error=True, timeout=120)
        clients += [job.value for job in jobs]
    for client in clients:
        gevent.spawn(client.run)
    return clients
