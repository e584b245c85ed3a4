"""Soak and faults under load: churn with slow readers, and kill -9 of the worker mid-stream.

The suite runs a bounded churn (SOAK_CYCLES, 2,000 by default: about 15 s); `make soak` runs
the same test longer. Figures of a run are printed (pytest -s shows them).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import struct
import threading
import time
from pathlib import Path

from tests.helpers import TIMEOUT, Client, RawClient, Server, stored, wait_for

TEXT, CLOSE = 0x1, 0x8
CHURN_THREADS = 4


def count(server: Server, room: str) -> int:
    """How many messages the store holds for `room` (a room with someone online)."""
    rooms = json.loads(server.get(f"/api/rooms?room={room}")[2])["rooms"]
    return next((r["messages"] for r in rooms if r["room"] == room), 0)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Reader(threading.Thread):
    """A fast reader: keeps every message id it gets, in order. With `resume`, it reconnects
    after a drop with `since` (the last id it has), as the page does."""

    def __init__(self, server: Server, room: str, name: str, resume: bool = False) -> None:
        super().__init__(daemon=True)
        self.server, self.room, self.name, self.resume = server, room, name, resume
        self.ids: list[int] = []
        self.stop = threading.Event()
        self.client = Client(server, room, name)
        self.client.expect("welcome")
        self.reconnects = 0

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while not self.stop.is_set():
            try:
                event = self.client.next(timeout=0.2)
            except TimeoutError:
                continue
            except ConnectionClosed:
                if not self.resume:
                    return
                self.client = self._reconnect()
                continue
            if event["type"] == "message":
                self.ids.append(int(event["id"]))

    def _reconnect(self) -> Client:
        since = str(self.ids[-1]) if self.ids else "0"
        deadline = time.monotonic() + 20
        while True:  # the worker is booting: retry, as the page does (with a short backoff)
            try:
                client = Client(self.server, self.room, self.name, since=since)
                welcome = client.expect("welcome")
                break
            except Exception:  # refused, reset or timed out while it boots
                assert time.monotonic() < deadline, "could not reconnect"
                time.sleep(0.1)
        self.ids += [int(m["id"]) for m in welcome["history"]]
        self.reconnects += 1
        return client

    def finish(self, last_id: int) -> list[int]:
        """Wait until it has `last_id`, then stop; its ids."""
        wait_for(lambda: last_id in self.ids or not self.is_alive(), 15, f"{self.name} to get {last_id}")
        self.stop.set()
        self.join(TIMEOUT)
        self.client.ws.close()
        return self.ids


def churn(server: Server, room: str, cycles: int, errors: list[BaseException]) -> None:
    """`cycles` times: connect on a bare socket, read the welcome, say one thing, close: every
    other cycle with the close handshake, the others at once, with events unread (the socket
    is reset then; the server must still read the message that came before the reset)."""
    try:
        for n in range(cycles):
            raw = RawClient(server, f"/ws?room={room}&name=churn-{n % 50}")
            assert raw.status == 101
            opcode, payload = raw.read_frame()
            assert opcode == TEXT and json.loads(payload.split(b"\n")[0])["type"] == "welcome"
            raw.send_frame(TEXT, json.dumps({"type": "message", "text": f"cycle {n} " + "x" * 3000}).encode())
            raw.send_frame(CLOSE, struct.pack("!H", 1000))
            if n % 2:
                assert raw.read_until_close()[0] == 1000
            raw.close()
    except BaseException as exc:  # reported by the test's thread
        errors.append(exc)


def test_churn_with_slow_readers_keeps_memory_and_gives_fast_readers_everything(make_server) -> None:
    cycles = int(os.environ.get("SOAK_CYCLES", "2000"))
    env = {"RATE_LIMIT": "100000", "SEND_QUEUE_SIZE": "16", "MAX_CONNECTIONS_PER_IP": "0", "HISTORY_LIMIT": "1000000"}
    env["MAX_MESSAGE_CHARS"] = "4000"  # 3 KB messages: a reader that never reads overflows its buffers
    server = make_server(env)
    room = "soak-" + secrets.token_hex(3)
    pid = server.health()["pid"]
    errors: list[BaseException] = []
    churn(server, room, 200, errors)  # warm-up: caches, pools, the first arenas
    assert not errors, errors
    rss_before = rss_kb(pid)
    readers = [Reader(server, room, f"fast-{i}") for i in range(8)]
    slow = [RawClient(server, f"/ws?room={room}&name=slow-{i}", rcvbuf=4096) for i in range(4)]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    rss = [rss_before]
    for _half in range(2):  # RSS after each half: a leak grows in both, a high-water mark in the first only
        threads = [
            threading.Thread(target=churn, args=(server, room, cycles // 2 // CHURN_THREADS, errors), daemon=True)
            for _ in range(CHURN_THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
            assert not thread.is_alive(), "a churn thread is stuck"
        assert not errors, errors
        rss.append(rss_kb(pid))
    elapsed = time.monotonic() - started
    said = 200 + cycles // 2 // CHURN_THREADS * CHURN_THREADS * 2
    # every cycle's message is stored (the poster may still hold the last ones: awaited)
    wait_for(lambda: count(server, room) >= said, 15, "every cycle's message stored")
    messages = stored(server, room)
    assert len(messages) == said
    live = [int(m["id"]) for m in messages[200:]]  # the ones said while the readers listened
    for reader in readers:
        ids = reader.finish(live[-1])
        assert ids == live, f"{reader.name}: {len(ids)} of {len(live)}"  # all, once, in order
    # the ones that never read were dropped as too slow (their close frame may never get out:
    # their buffers are full), and nobody waited on them
    wait_for(lambda: server.health()["dropped_slow"] >= len(slow), 20, "the slow readers dropped")
    for raw in slow:
        raw.close()
    wait_for(lambda: server.health()["connections"] == 0, 10, "every connection gone")
    rss.append(rss_kb(pid))
    print(
        f"\nchurn: {said - 200} cycles in {elapsed:.1f} s ({(said - 200) / elapsed:.0f}/s), {len(live)} messages"
        f" to {len(readers)} fast readers; worker RSS after the warm-up, each half, and all closed:"
        f" {' -> '.join(f'{kb / 1024:.1f}' for kb in rss)} MB"
    )
    assert rss[-1] - rss[0] < 16 * 1024, f"RSS grew {rss} kB"
    assert rss[2] - rss[1] < 4 * 1024, f"RSS grew in the second half as in the first: {rss} kB"


def test_kill_9_under_load_readers_resume_with_since_and_miss_nothing_stored(make_server) -> None:
    server = make_server({"RATE_LIMIT": "100000", "HISTORY_LIMIT": "1000000"})
    room = "kill-" + secrets.token_hex(3)
    readers = [Reader(server, room, f"reader-{i}", resume=True) for i in range(4)]
    for reader in readers:
        reader.start()
    stop = threading.Event()

    def send(who: str) -> None:  # a steady stream, through the kill (a send that fails is retried later)
        n = 0
        while not stop.is_set():
            try:
                with Client(server, room, who) as client:
                    client.expect("welcome")
                    while not stop.is_set():
                        client.say(f"{who} {n}")
                        n += 1
                        time.sleep(0.005)  # a pace, not a wait for an event
            except Exception:
                time.sleep(0.1)

    senders = [threading.Thread(target=send, args=(f"sender-{i}",), daemon=True) for i in range(3)]
    for thread in senders:
        thread.start()
    wait_for(lambda: min(len(r.ids) for r in readers) > 100, 15, "the stream flowing")
    victim = server.health()["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: server.health()["pid"] != victim, 20, "gunicorn's new worker")
    before = count(server, room)
    wait_for(lambda: count(server, room) > before + 100, 15, "the stream flowing again")
    stop.set()
    for thread in senders:
        thread.join(TIMEOUT)
    messages = [int(m["id"]) for m in stored(server, room)]
    for reader in readers:
        ids = reader.finish(messages[-1])
        assert reader.reconnects >= 1
        assert ids == messages, f"{reader.name}: {len(ids)} of {len(messages)}"  # every stored one, once, in order
