"""Test helpers: a real gunicorn server, WebSocket clients, a raw-socket client."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from chatapp.realtime.framing import frame, header

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0  # seconds any single wait in a test may take


def require(available: bool, what: str) -> None:
    """Skip when `what` is missing on a developer machine; fail when CHAT_REQUIRE_ALL=1 (CI)."""
    import pytest

    if available:
        return
    if os.environ.get("CHAT_REQUIRE_ALL") == "1":
        pytest.fail(f"{what} is required (CHAT_REQUIRE_ALL=1)")
    pytest.skip(f"{what} is not available")


def wait_for(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll a condition that no event announces (a process state seen from outside)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def worker_of(server: Server, client: Client, welcome: dict) -> str:
    """The pid of the worker serving `client`, from the server's log line of its connect (at
    DEBUG: the server runs with LOG_LEVEL=DEBUG)."""
    for line in reversed(server.log().splitlines()):
        if f"connect {welcome['you']['id']} " in line:
            return line.split("[", 1)[1].split("]", 1)[0]
    raise AssertionError("connect not logged")


def events_of(payload: str | bytes) -> list[dict[str, Any]]:
    """The events of one server frame, one per line (what a client does with a frame)."""
    newline = "\n" if isinstance(payload, str) else b"\n"
    return [json.loads(line) for line in payload.split(newline)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `gunicorn -k gevent wsgi:app` on a free loopback port, from the repo root."""

    def __init__(
        self, tmp: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = (), port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.ws_url = f"ws://{self.host}/ws"
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "DATABASE_PATH": str(tmp / "chat.sqlite3"),
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(tmp),  # its temporary metrics directory, among the test's files
            # every test client comes from 127.0.0.1: the tests of the per-address limits set them
            "ADDRESS_RATE_LIMIT": "0",
            "API_RATE_LIMIT": "0",
            "ANNOUNCE_LIMIT": "0",
            "CONNECT_RATE_LIMIT": "0",
            "FRAME_RATE_LIMIT": "0",
            **(env or {}),
        }
        for own in ("PORT", "PROMETHEUS_MULTIPROC_DIR", "CHATAPP_OWN_METRICS_DIR"):  # each server its own
            self.env.pop(own, None)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: int = 200) -> Server:
        """Start gunicorn; return once /healthz answers `ready`."""
        command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", self.host, "--no-control-socket"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*command, *self.args, "wsgi:app"], cwd=ROOT, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/healthz")[0] == ready:
                    return self
            except OSError:
                time.sleep(0.05)  # polling a process that is starting: there is no event to await
        raise RuntimeError(f"gunicorn did not answer within 20 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM: a deploy's graceful stop (clients told, the worker's second at the end).
        Not graceful: SIGQUIT, gunicorn's quick stop, a second less (a fixture's teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if graceful else signal.SIGQUIT)
            try:
                self.proc.wait(25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def health(self) -> dict[str, Any]:
        """/healthz of whichever worker answers: its pid, connections, dropped_slow..."""
        return json.loads(self.get("/healthz")[2])

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, headers=dict(headers or {}), method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


def stored(server: Server, room: str) -> list[dict[str, Any]]:
    """Every message the store holds for `room`, oldest first (the API, page by page)."""
    messages: list[dict[str, Any]] = []
    while True:
        since = messages[-1]["id"] if messages else "0"
        status, _, body = server.get(f"/api/rooms/{room}/messages?limit=500&since={since}")
        assert status == 200, body
        page = json.loads(body)["messages"]
        if not page:
            return messages
        messages += page


class Client:
    """A WebSocket client (the `websockets` library) that reads events, one per line."""

    def __init__(self, server: Server, room: str | None = "lobby", name: str | None = "tester", **query: str) -> None:
        params = {k: v for k, v in {"room": room, "name": name, **query}.items() if v is not None}
        url = server.ws_url + ("?" + urllib.parse.urlencode(params) if params else "")
        self.ws: ClientConnection = connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=None).__enter__()
        self.pending: list[dict[str, Any]] = []
        self.frames = 0

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ws.close()

    def send(self, event: Mapping[str, Any] | str | bytes) -> None:
        self.ws.send(event if isinstance(event, str | bytes) else json.dumps(event))

    def say(self, text: str, cid: str | None = None) -> None:
        self.send({"type": "message", "text": text, **({"cid": cid} if cid else {})})

    def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        if not self.pending:
            frame = self.ws.recv(timeout=timeout)
            self.frames += 1
            self.pending.extend(events_of(frame))
        return self.pending.pop(0)

    def expect(self, type_: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The next event of `type_` (with `fields`), skipping others; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(deadline - time.monotonic(), 0.01))
            if event["type"] == type_ and all(event.get(k) == v for k, v in fields.items()):
                return event

    def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None, list[dict[str, Any]]]:
        """Read until the server closes; return its close code, reason, and the events before."""
        from websockets.exceptions import ConnectionClosed

        events = list(self.pending)
        self.pending.clear()
        deadline = time.monotonic() + timeout
        try:
            while True:
                events += events_of(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else None), events


class RawClient:
    """A WebSocket client on a bare socket: it sends what it likes and reads only when told."""

    def __init__(
        self,
        server: Server,
        path: str = "/ws?room=lobby&name=raw",
        headers: Mapping[str, str] | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {(headers or {}).get('Host', server.host)}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items() if k != "Host"),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])
        self.head = head.decode()

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> None:
        self.sock.sendall(frame(opcode, payload, fin=fin, mask=mask))

    def read_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; its first byte stays in `first_byte`."""
        self.sock.settimeout(timeout)
        while (found := header(self.buffer)) is None or len(self.buffer) < found[2]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buffer += chunk
        assert self.buffer[1] & 0x80 == 0, "server frames must not be masked"
        self.first_byte, start, end = found
        payload, self.buffer = self.buffer[start:end], self.buffer[end:]
        return self.first_byte & 0x0F, payload

    def read_until_close(self, timeout: float = TIMEOUT) -> tuple[int, list[dict[str, Any]]]:
        """Read frames until a close frame; return its code and the events before it."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = self.read_frame(max(deadline - time.monotonic(), 0.01))
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0], events
            if opcode == 0x1:
                events += events_of(payload)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def running(tmp: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> Iterator[Server]:
    server = Server(tmp, env, args).start()
    try:
        yield server
    finally:
        server.stop(graceful=False)


REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"


def _reply(sock: socket.socket) -> bytes:
    """One reply of Redis, read whole: a bulk string (`$<length>`, then as many bytes), or a
    line (an error while it loads its data, say)."""
    data = b""
    while b"\r\n" not in data or (data.startswith(b"$") and len(data) < _bulk_end(data)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _bulk_end(data: bytes) -> int:
    head = data.index(b"\r\n")
    return head + 2 + int(data[1:head]) + 2


class RedisServer:
    """A real redis-server on a free loopback port, persisting to `folder` (so a restart keeps
    its data, as a deployed one does)."""

    def __init__(self, folder: Path, port: int | None = None, tls: bool = False) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        command += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", *extra]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:  # exited: its port was taken
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if self.tls:
                        return self  # it listens; the tests speak TLS to it through the app
                    s.sendall(b"INFO server\r\n")  # ours, not another server on a port taken since
                    reply = _reply(s)
                    if f"process_id:{self.proc.pid}\r\n".encode() in reply:
                        return self
                    if b"process_id:" in reply:  # another's: ours exits, its port was taken
                        self.proc.wait(10)
                    else:
                        time.sleep(0.02)  # still loading its data: no event to await
            except OSError:
                time.sleep(0.02)  # a process that is starting: there is no event to await
        self.stop()  # not left running for the garbage collector to warn of
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        elif self.proc is not None:
            self.proc.wait()  # reaped: no warning of a process still running
