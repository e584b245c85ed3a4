"""The benchmark runner: starts each server, drives it with bench/load.py's clients (or, for
fanout and latency with `--generator c`, bench/loadgen's), prints a table and writes JSON
(bench/results/). One process and one thread; the server is pinned to CPU 0 and this process
(and bench/loadgen) to CPU 1 (taskset and sched_setaffinity), as on the 2-core machine the
figures in the README come from.

    .venv/bin/python bench/run.py fanout --n 1000 --servers plain,chat --generator c
    .venv/bin/python bench/run.py fanout --n 1000 --servers chat-redis,chat-redis-2w --generator c
    .venv/bin/python bench/run.py latency --n 1000 --rate 20 --generator c
    .venv/bin/python bench/run.py ingest --n 100 --generator c --servers chat@old,chat
    .venv/bin/python bench/run.py storm --n 1000
    .venv/bin/python bench/run.py idle --n 10000 --room-size 0
    .venv/bin/python bench/run.py fanout --n 1000 --servers plain+deflate,chat+deflate
    .venv/bin/python bench/run.py flood --rate 10 --servers chat,chat+limits
    .venv/bin/python bench/run.py rooms --n 10000 --room-size 5 --big 1000 --rate 10 --servers chat
    .venv/bin/python bench/run.py rooms --n 2000 --room-size 5 --servers chat-redis-8w@old,chat-redis-8w

Modes. rooms: the shape of a real chat, N clients in rooms of --room-size, each room sending
one message every --period seconds (the rooms' turns spread evenly over the period), and with
--big a room of that many more clients at --rate messages/s; per worker, the backplane events
it received against those of rooms it has clients in, and per Redis node its commands/s.
flood: a pair talks at --rate while two clients stream typing events as fast as they can
(`chat+limits`: with the default per-connection frame budget). `chat+echo` (storm): the chat's
server with its clients on /ws/echo, the layer's connect without the chat's. `chat+ahead`
(storm): the chat with its upgrade answered ahead of Flask (bench/upgrade_ahead.py), what that
road would buy.
latency: a fixed rate into one room of N. ingest: more than the worker can take into one room
of N (--rate, 60,000 messages/s): the messages it stores per second, and its CPU. storm: N
clients at once (handshakes/s, time until all are welcomed). idle: N idle connections
(server memory per connection, after --settle seconds idle), then one broadcast that must
reach them all; one room, or rooms of --room-size (chat). A `+deflate` server
(plain+deflate, chat+deflate): clients offer permessage-deflate, as browsers do. Fan-out
ramp: N clients in one room, S of them sending at a total rate that grows by half each step;
a step passes when >= 99% of deliveries arrive with p99 latency <= 250 ms. The figure of a
server is its best passing step.

Generators (bench/generators.py). `python`: bench/load.py's clients in this process, one
epoll loop; it fills its core at 576,500-864,750 deliveries/s, under this server's capacity.
`c` (fanout and latency): bench/loadgen, built from bench/loadgen.c by `make bench/loadgen`
(`make bench` builds it), the same clients and checks in C, a process of its own on CPU 1
driven over a pipe; a +deflate server still gets load.py's (loadgen has no permessage-deflate).
Each row shows the generator's CPU beside the server's; the JSON names the generator.

Servers. `chat-redis-Nw`: N workers on Redis (2: on CPUs 0 and 1, shared with the generator;
more: on CPU 0). `chat-cluster-8w`: 8 workers on a Redis Cluster of three masters and three
replicas (tests/cluster.py; REDIS_CLUSTER=1), which needs the server's cluster support.
`KIND@old`: KIND run from the code in --old's folder (a worktree of an earlier commit) with
its own gunicorn.conf.py. Each server gets a Redis (or cluster) of its own, fresh, on CPU 0.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generators import CGenerator, Generator, PythonGenerator, check_loadgen  # noqa: E402
from bench.load import BenchClient, Loop, connect_all, free_port, percentile, request_all  # noqa: E402
from chatapp.realtime.framing import Opcode, frame  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PASS_DELIVERED = 0.99
PASS_P99 = 0.250
STEPS = 24  # fanout: the ramp's steps at most (from 10,000 deliveries/s, each x1.5: past 1e8, beyond any server here)
REFINE = 2  # fanout: steps tried between the last passed and the first failed (see fanout)
API_TOKEN = "bench-token"
PRESENCE_WARM = 35.0  # rooms: seconds from a Redis server's start to its step (presence's sweeps begin)


def code_of(kind: str, old: Path) -> Path:
    """The folder whose code serves `kind`: this one, or `old` for `KIND@old`."""
    return old if kind.partition("@")[2] == "old" else ROOT


def check_kind(kind: str, old: Path) -> None:
    """SystemExit, before anything starts, for a server kind that cannot run here."""
    code = code_of(kind, old)
    if not (code / "wsgi.py").exists():
        raise SystemExit(f"{kind}: no server code in {code} (`git worktree add {code} 7ca1669^` for the old one)")
    if "cluster" in kind and not any("REDIS_CLUSTER" in p.read_text() for p in (code / "chatapp").rglob("*.py")):
        raise SystemExit(
            f"{kind}: the server's code in {code} does not read REDIS_CLUSTER: Redis Cluster support"
            " is not in this tree yet (it needs the cluster work merged)"
        )


class ServerProcess:
    """One server under test: `plain` (the baseline), `chat`, `chat-redis`, `chat-redis-2w`,
    `chat-redis-8w`, `chat-cluster-8w`; `KIND@old` from the code in `old_code`."""

    old_code = ROOT.parent / "wt-old"  # the code of `KIND@old` (--old)

    def __init__(self, kind: str, folder: str, redis_url: str | None) -> None:
        self.kind = kind
        self.code = code_of(kind, self.old_code)
        kind = kind.partition("@")[0]
        # `+deflate`: clients offer permessage-deflate, as browsers do, and the chat turns it on
        self.deflate = kind.endswith("+deflate")
        # `+limits`: the chat's per-connection frame budget at its default (off for the other
        # modes, whose senders send far more than a person)
        limits = kind.endswith("+limits")
        # `chat+echo`: the chat's server, its clients on /ws/echo (CHAT_ECHO_ROUTE=1): the layer's
        # connect (upgrade, hooks, session, reader, writer) without the chat's (no room, no welcome)
        self.echo = kind.endswith("+echo")
        # `chat+ahead`: the chat with its upgrade answered ahead of Flask (bench/upgrade_ahead.py)
        ahead = kind.endswith("+ahead")
        kind = kind.removesuffix("+deflate").removesuffix("+limits").removesuffix("+echo").removesuffix("+ahead")
        self.port = free_port()
        many = re.search(r"-(\d+)w$", kind)
        workers = int(many.group(1)) if many else 1
        self.worker_count = workers
        cores = "0,1" if workers == 2 else "0"
        pin = ["taskset", "-c", cores] if shutil.which("taskset") else []
        # each worker's metrics in files of its own (its pid in their names): read per worker
        self.metrics_dir = tempfile.mkdtemp(dir=folder, prefix="metrics-")
        base = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", f"127.0.0.1:{self.port}", "--no-control-socket"]
        env = {
            **os.environ,
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT": "1000000000",
            "DATABASE_PATH": f"{folder}/{kind}.db",
            "CHAT_API_TOKEN": API_TOKEN,
            "WS_DEFLATE": "1" if self.deflate else "0",
            "MAX_CONNECTIONS_PER_IP": "0",  # every client comes from 127.0.0.1
            "ADDRESS_RATE_LIMIT": "0",
            "API_RATE_LIMIT": "0",
            "ANNOUNCE_LIMIT": "0",
            "CONNECT_RATE_LIMIT": "0",
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            **({} if limits else {"FRAME_RATE_LIMIT": "0"}),
            **({"CHAT_ECHO_ROUTE": "1"} if self.echo else {}),
        }
        if kind == "plain":
            # stock gunicorn settings (-c /dev/null: not the chat's gunicorn.conf.py), 20,000 connections
            command = [*base, "-c", "/dev/null", "-w", "1", "--worker-connections", "20000", "bench.baseline_app:app"]
        else:
            app = "bench.upgrade_ahead:app" if ahead else "wsgi:app"
            command = [*base, *(["-w", str(workers)] if workers > 1 else []), app]
            if "redis" in kind or "cluster" in kind:
                env["REDIS_URL"] = redis_url or ""
            if "cluster" in kind:
                env["REDIS_CLUSTER"] = "1"
        self.protocol = "plain" if kind == "plain" or self.echo else "chat"  # echo: no welcome either
        self.log = Path(folder) / f"server-{self.port}.log"  # its stderr, for when it fails
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([*pin, *command], cwd=self.code, env=env, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/{'healthz' if kind != 'plain' else 'ws'}", timeout=1
                )
                break
            except urllib.error.HTTPError:
                break  # the baseline answers 400 to plain HTTP on /ws: it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{kind} did not start; its log's end:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def path(self, i: int, room_size: int = 0) -> str:
        """Client i's URL: one room for all, or rooms of `room_size` (chat only)."""
        if self.protocol == "plain":
            return "/ws/echo" if self.echo else "/ws"
        return f"/ws?room={f'r{i // room_size}' if room_size else 'bench'}&name=c{i}"

    def room_path(self) -> str:
        """Every client's URL in one room, `{i}` for the client's number (bench/loadgen's --path)."""
        return "/ws" if self.protocol == "plain" else "/ws?room=bench&name=c{i}"

    def connect(self, loop: Loop, path: Callable[[int], str], n: int, senders: int, at_once: int) -> list[BenchClient]:
        return connect_all(loop, "127.0.0.1", self.port, path, self.protocol, n, senders, at_once, self.deflate)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def cpu(self) -> float:
        return sum(map(worker_cpu, self.workers()))

    def rss_mb(self) -> float:
        total = 0
        for pid in self.workers():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def step(server: ServerProcess, gen: Generator, senders: int, rate: float, seconds: float) -> dict:
    """Send `rate` messages/s in all, round-robin from the first `senders` clients, for
    `seconds`; then wait (5 s at most) for the last deliveries, and measure: the generator's
    row, with the server's CPU over the same time beside the generator's."""
    cpu0 = server.cpu()
    row = gen.step(senders, rate, seconds)
    row["server_cpu_pct"] = 100 * (server.cpu() - cpu0) / row["elapsed_s"]  # over the generator's step
    row["server_rss_mb"] = server.rss_mb()
    row["passed"] = (
        row["delivered"] >= PASS_DELIVERED * row["expected"] and row["p99_ms"] <= PASS_P99 * 1e3 and not row["doubled"]
    )
    return row


def one_room(server: ServerProcess, n: int, senders: int, generator: str) -> Generator:
    """N clients in one room, every one reached by a broadcast: bench/loadgen's (`generator`
    c, but for a +deflate server) or load.py's."""
    gen: Generator
    if generator == "c" and not server.deflate:
        gen = CGenerator(server.port, server.room_path(), server.protocol, n, senders, at_once=200)
    else:
        loop = Loop()
        gen = PythonGenerator(loop, server.connect(loop, server.path, n, senders, at_once=200))
    try:
        gen.quiet(still=0.5, limit=60)
        wait_ready(server, gen)
    except BaseException:
        gen.close()
        raise
    return gen


def fanout(kind: str, n: int, senders: int, seconds: float, folder: str, redis_url: str | None, generator: str) -> dict:
    server = ServerProcess(kind, folder, redis_url)
    try:
        gen = one_room(server, n, senders, generator)
        try:
            rate, rows = max(1.0, 10_000 / n), []
            for _ in range(STEPS):
                row = step(server, gen, senders, rate, seconds)
                rows.append(row)
                print(format_row(kind, n, row), flush=True)
                if not row["passed"]:
                    break
                gen.quiet(still=0.3, limit=60)
                rate *= 1.5
            # Steps grow by half, so a best step is up to a third below what the server can
            # do: between the last step passed and the one failed, REFINE more, each halfway
            # (geometrically) between the closest passed and failed so far.
            passed, failed = rate / 1.5, rate
            for _ in range(REFINE if rows[-1]["passed"] is False and len(rows) > 1 else 0):
                gen.quiet(still=0.3, limit=60)
                row = step(server, gen, senders, (passed * failed) ** 0.5, seconds)
                rows.append(row)
                print(format_row(kind, n, row), flush=True)
                passed, failed = (row["rate"], failed) if row["passed"] else (passed, row["rate"])
        finally:
            gen.close()
        passing = [r for r in rows if r["passed"]]
        best = max(passing, key=lambda r: r["deliveries_per_s"]) if passing else None
        return {"server": kind, "n": n, "senders": senders, "generator": gen.kind, "steps": rows, "best": best}
    finally:
        server.stop()


def latency(
    kind: str, n: int, senders: int, rate: float, seconds: float, folder: str, redis_url: str | None, generator: str
) -> dict:
    """A fixed rate into one room of N: the latency a person feels, not the peak."""
    server = ServerProcess(kind, folder, redis_url)
    try:
        gen = one_room(server, n, senders, generator)
        try:
            row = step(server, gen, senders, rate, seconds)
        finally:
            gen.close()
        print(format_row(kind, n, row), flush=True)
        best = row if row["passed"] else None
        return {"server": kind, "n": n, "senders": senders, "generator": gen.kind, "steps": [row], "best": best}
    finally:
        server.stop()


def ingest(
    kind: str, n: int, senders: int, rate: float, seconds: float, folder: str, redis_url: str | None, generator: str
) -> dict:
    """Offered more than a worker can take in (`rate` messages/s into one room of N): what it
    does take in, store and fan out per second: its count of messages stored (its metrics
    file; with several workers, their sum), over the step but its first and last 1.5 s, and
    its CPU over that time (at 100%, the figure is the worker's capacity). The fan-out
    ramp's best step is bound by latency too (PASS_P99); this is not. The chat's servers only
    (plain stores nothing). A thread reads the count while the step runs (on this process's
    core, reading a file)."""
    server = ServerProcess(kind, folder, redis_url)
    try:
        gen = one_room(server, n, senders, generator)
        pids = server.workers()
        window: list[tuple[float, float, float]] = []  # (time, stored, server CPU) at its ends

        def sample() -> None:
            for wait in (1.5, seconds - 3.0):
                time.sleep(wait)
                stored = sum(
                    worker_values(server.metrics_dir, pid).get("chat_messages_stored_total", 0.0) for pid in pids
                )
                window.append((time.monotonic(), stored, server.cpu()))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            row = step(server, gen, senders, rate, seconds)
        finally:
            sampler.join()
            gen.close()
        (t0, stored0, cpu0), (t1, stored1, cpu1) = window
        row |= {"stored_per_s": (stored1 - stored0) / (t1 - t0), "stored_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0)}
        print(
            f"{kind:<14}{n:>6}{rate:>9.0f}  stored {row['stored_per_s']:>9,.0f} msg/s"
            f" ({row['stored_per_s'] * n:>12,.0f} deliveries/s), server {row['stored_cpu_pct']:.0f}%,"
            f" generator {row['bench_cpu_pct']:.0f}%; delivered by the step's end"
            f" {100 * row['delivered'] / row['expected']:.1f}%, {row['doubled']} twice",
            flush=True,
        )
        return {"server": kind, "n": n, "senders": senders, "generator": gen.kind, "steps": [row], "best": row}
    finally:
        server.stop()


def storm(kind: str, n: int, folder: str, redis_url: str | None) -> dict:
    """N clients at once into one room: handshakes/s, and the time until every one is welcomed.
    Before it, on the same server (not the plain baseline, which has none), the floor: N
    `GET /healthz` at once, each on a connection of its own, through the same gunicorn worker
    and Flask: no upgrade can cost the worker less. Its CPU per request beside the storm's per
    client (upgrade, join and welcome) gives the ratio the connect path is judged by."""
    server = ServerProcess(kind, folder, redis_url)
    try:
        loop = Loop()
        floor: dict = {}
        if not server.kind.startswith("plain"):
            cpu0, start = server.cpu(), time.monotonic()
            requests = request_all(loop, "127.0.0.1", server.port, "/healthz", n, at_once=n)
            answered = max(r.upgraded_at for r in requests) - start
            floor = {"healthz_per_s": round(n / answered), "healthz_cpu_ms": round((server.cpu() - cpu0) / n * 1000, 3)}
        cpu0, own0 = server.cpu(), time.process_time()
        start = time.monotonic()
        clients = server.connect(loop, server.path, n, 1, at_once=n)
        upgraded = max(c.upgraded_at for c in clients) - start
        loop.wait_quiet(clients, still=0.05, limit=120)
        settled = max(upgraded, loop.last_frame - start)  # every welcome in, and the joins they set off
        server_cpu, own = server.cpu() - cpu0, time.process_time() - own0
        result = {
            "server": kind,
            "n": n,
            "all_upgraded_s": round(upgraded, 3),
            "handshakes_per_s": round(n / upgraded),
            "all_welcomed_and_quiet_s": round(settled, 3),
            "frames": sum(c.frames for c in clients),
            "server_cpu_s": round(server_cpu, 2),
            "bench_cpu_s": round(own, 2),
            "server_rss_mb": round(server.rss_mb(), 1),
            "connect_cpu_ms": round(server_cpu / n * 1000, 3),
            **floor,
        }
        print(
            f"{kind:<14}{n:>6}  upgraded in {upgraded:.2f} s ({n / upgraded:,.0f} handshakes/s),"
            f" all welcomed and quiet in {settled:.2f} s; CPU server {server_cpu:.2f} s, generator {own:.2f} s",
            flush=True,
        )
        if floor:
            print(
                f"{'':<20}floor: {floor['healthz_per_s']:,} GET /healthz/s, {floor['healthz_cpu_ms']:.3f} ms of the"
                f" worker's CPU each; a connect {result['connect_cpu_ms']:.3f} ms"
                f" ({result['connect_cpu_ms'] / floor['healthz_cpu_ms']:.2f}x)",
                flush=True,
            )
        loop.close(clients)
        return result
    finally:
        server.stop()


def broadcast(server: ServerProcess, gen: Generator, rooms: list[str], limit: float = 60.0) -> float:
    """One message to every client (chat: posted by the HTTP API to each room; plain: sent by
    the first client); the seconds until all have it. SystemExit if some lack it after `limit`."""
    gen.mark()
    start = time.monotonic()
    if server.protocol == "plain":
        gen.say(0)
        rooms = []
    for room in rooms:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/rooms/{room}/messages",
            data=json.dumps({"text": "broadcast", "name": "bench"}).encode(),
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()
    missing = gen.reached(limit)
    if missing:
        raise SystemExit(f"the broadcast did not reach {missing} of the clients in {limit:.0f} s")
    return time.monotonic() - start


def flood(kind: str, rate: float, seconds: float, folder: str) -> dict:
    """Two clients stream typing events as fast as they can (cheap for them, and each one work
    for the server) while a pair in another room talks at `rate` messages/s: the pair's latency,
    and what became of the flooders (`chat+limits`: the default frame budget closes them)."""
    server = ServerProcess(kind, folder, None)
    stop, sent, closed = threading.Event(), [0, 0], [False, False]
    typing = b'{"type":"typing"}'
    burst = frame(Opcode.TEXT, typing, mask=True, key=bytes(4))  # masked with zeros: cheap to send

    def flooder(n: int) -> None:
        sock = socket.create_connection(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws?room=flood&name=f{n} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        sock.recv(4096)
        try:
            while not stop.is_set():
                sock.sendall(burst * 200)
                sent[n] += 200
        except OSError:
            closed[n] = True  # the server closed it
        finally:
            sock.close()

    try:
        loop = Loop()
        pair = server.connect(loop, server.path, 2, 2, at_once=2)  # both talk, each within the frame budget
        loop.wait_quiet(pair, still=0.5, limit=10)
        threads = [threading.Thread(target=flooder, args=(n,), daemon=True) for n in (0, 1)]
        for thread in threads:
            thread.start()
        row = step(server, PythonGenerator(loop, pair), 2, rate, seconds)
        stop.set()
        for thread in threads:
            thread.join(10)
        row.update(flood_frames_sent=sum(sent), flooders_closed=sum(closed))
        print(format_row(kind, 2, row), f"flood: {sum(sent)} frames sent, {sum(closed)} of 2 closed", flush=True)
        loop.close(pair)
        return {"server": kind, "n": 2, "senders": 2, "steps": [row], "best": row if row["passed"] else None}
    finally:
        server.stop()


def wait_ready(server: ServerProcess, gen: Generator) -> None:
    """Wait until the server delivers to every client. The chat has once it welcomed them; the
    baseline says nothing when its handler has put a new socket in its set, some time after
    the 101, so a step started at once would miss some: broadcast until one reaches all."""
    for _ in range(30):
        try:
            broadcast(server, gen, ["bench"], limit=2.0)
            break
        except SystemExit:
            continue
    else:
        raise SystemExit("the server never delivered to every client")
    gen.quiet(still=0.3, limit=60)


def idle(kind: str, n: int, room_size: int, settle: float, folder: str, redis_url: str | None) -> dict:
    """N idle connections: the server's memory per connection (RSS growth / N), then one
    broadcast that must reach them all."""
    server = ServerProcess(kind, folder, redis_url)
    room_size = room_size or n + 10  # 0: one room, the 10 warm clients in it too
    try:
        loop = Loop()
        warm = server.connect(loop, lambda i: server.path(i, room_size), 10, 1, at_once=10)
        loop.wait_quiet(warm, still=0.5, limit=60)
        before = server.rss_mb()
        clients = server.connect(loop, lambda i: server.path(i + 10, room_size), n, 1, at_once=200)
        loop.wait_quiet(warm + clients, still=1.0, limit=300)
        loop.run(lambda: False, settle)  # idle (pings answered) past two ping intervals: idle writers end
        after = server.rss_mb()
        per = (after - before) * 1024 / n
        rooms = sorted({f"r{i // room_size}" for i in range(n + 10)})
        took = broadcast(server, PythonGenerator(loop, warm + clients), rooms)
        result = {
            "server": kind,
            "n": n,
            "room_size": room_size,
            "idle_s": settle,
            "rss_before_mb": round(before, 1),
            "rss_after_mb": round(after, 1),
            "kb_per_connection": round(per, 1),
            "broadcast_to_all_s": round(took, 3),
        }
        print(
            f"{kind:<14}{n:>6}  RSS {before:.0f} -> {after:.0f} MB: {per:.1f} KB per connection;"
            f" a broadcast reached all {n + 10} in {took * 1e3:.0f} ms",
            flush=True,
        )
        loop.close(warm + clients)
        return result
    finally:
        server.stop()


def rooms(
    kind: str,
    n: int,
    room_size: int,
    big: int,
    period: float,
    rate: float,
    seconds: float,
    folder: str,
    backend: Backend,
) -> dict:
    """The shape of a real chat: N clients in rooms of `room_size`, each room sending one
    message every `period` s (room r at r/R of the period, so the load is even), and `big`
    more clients in one room at `rate` messages/s. Every client must get every message of its
    room once and in id order. Then per worker: the backplane events it received against those
    of rooms it has clients in; per Redis node: its commands/s."""
    server = ServerProcess(kind, folder, backend.url)
    try:
        started = time.monotonic()  # the server answers /healthz
        pids = wait_workers_up(server)  # every worker up before the clients come
        loop = Loop()
        loop.sample = 1  # few messages per client: time every one
        # A room's people do not arrive one after the other: clients connect in a shuffled
        # order, so which workers a room's clients land on is as random as the accepts.
        room_of = [i // room_size for i in range(n)]
        random.Random(n).shuffle(room_of)
        rooms = -(-n // room_size)
        room_of += [rooms] * big  # the big room's clients come last
        names = [f"r{room}" for room in range(rooms)] + ["big"]
        clients = server.connect(loop, lambda i: f"/ws?room={names[room_of[i]]}&name=c{i}", n + big, 1, 200)
        members: list[list[BenchClient]] = [[] for _ in range(rooms + (1 if big else 0))]
        for client, room in zip(clients, room_of, strict=True):
            members[room].append(client)
        loop.wait_quiet(clients, still=1.0, limit=300)
        connected = time.monotonic() - started
        # With Redis, presence's heartbeat sweeps every room only once each worker's beat has
        # been steady for 3/4 PRESENCE_TTL (30 s): start the step after that, when Redis's
        # load is what it will stay.
        loop.run(lambda: False, max(1.5, (PRESENCE_WARM if backend.nodes else 0) - connected))
        placed = workers_of(server, clients)
        counts0 = {pid: worker_values(server.metrics_dir, pid) for pid in pids}
        for client in clients:
            client.lat = []
            client.dups = client.gaps = 0
        base = [client.delivered for client in clients]
        received, frames, pings = sum(c.received for c in clients), sum(c.frames for c in clients), loop.pings
        small_total, big_total = int(seconds * rooms / period), int(seconds * rate) if big else 0
        sent = [0] * len(members)  # per room
        done = [0, 0]  # small rooms' messages, the big room's
        cpu0 = {pid: worker_cpu(pid) for pid in pids}
        wait0, pressure0 = sum(map(cpu_wait, pids)), cpu_pressure()
        info0 = backend.info()
        own0, start, began = time.process_time(), time.time(), time.monotonic() - started

        def sending() -> bool:
            """Send what is due by now: small rooms' j-th at j * period / R (room j % R), the
            big room's k-th at k / rate. True once all is sent."""
            elapsed = time.time() - start
            small_due = min(small_total, int(elapsed * rooms / period) + 1)
            big_due = min(big_total, int(elapsed * rate) + 1)
            while done[0] < small_due:
                room = done[0] % rooms
                say(members[room], sent[room])
                sent[room] += 1
                done[0] += 1
            while done[1] < big_due:
                say(members[-1], sent[-1])
                sent[-1] += 1
                done[1] += 1
            return done == [small_total, big_total]

        loop.run(sending, seconds + 10, tick=0.001)
        expected = [sent[room_of[i]] for i in range(len(clients))]
        loop.run(
            lambda: all(c.delivered - b >= e for c, b, e in zip(clients, base, expected, strict=True)),
            10.0,
        )
        elapsed = time.time() - start
        cpu = {pid: worker_cpu(pid) - cpu0[pid] for pid in pids}
        wait, pressure = sum(map(cpu_wait, pids)) - wait0, cpu_pressure() - pressure0
        own = time.process_time() - own0
        info1 = backend.info()
        loop.run(lambda: False, 1.5)  # the step's counts into every worker's metrics files
        counts1 = {pid: worker_values(server.metrics_dir, pid) for pid in pids}
        health = health_of_workers(server, pids)  # their subscriptions
        latencies = sorted(x for client in clients for x in client.lat)
        delivered = sum(c.delivered - b for c, b in zip(clients, base, strict=True))
        messages = sum(sent)
        row = {
            "rate": messages / seconds,
            "sent": messages,
            "expected": sum(expected),
            "delivered": delivered,
            "missing": sum(max(0, e - (c.delivered - b)) for c, b, e in zip(clients, base, expected, strict=True)),
            "doubled": sum(c.dups for c in clients),
            "connections_lost": sum(1 for c in clients if not c.open),
            "deliveries_per_s": delivered / seconds,
            "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3,
            "max_ms": (latencies[-1] if latencies else float("nan")) * 1e3,
            "latency_samples": len(latencies),
            "frames": sum(c.frames for c in clients) - frames,
            # the server pings every client every PING_INTERVAL (25 s), all in one round per worker:
            # a step of 15 s has one round or none; with 10,000 clients on a worker, a stall
            "pings": loop.pings - pings,
            "bytes_per_delivery": (sum(c.received for c in clients) - received) / max(1, delivered),
            "server_cpu_pct": 100 * sum(cpu.values()) / elapsed,
            "redis_cpu_pct": 100 * sum(map(redis_cpu, info1)) / elapsed - 100 * sum(map(redis_cpu, info0)) / elapsed,
            "bench_cpu_pct": 100 * own / elapsed,
            # contention: the server's workers' time runnable but not running (summed: they share
            # CPU 0 with each other and Redis, and with other work), and the time some task
            # anywhere waited for a CPU (/proc/pressure/cpu)
            "server_cpu_wait_pct": 100 * wait / elapsed,
            "cpu_pressure_pct": 100 * pressure / elapsed,
            "server_rss_mb": server.rss_mb(),
            "elapsed_s": elapsed,
        }
        # ids rise within a room but need not follow on (SQLite's are global): a message is lost
        # when a client got fewer than its room sent, doubled (or out of order) when an id did not rise
        row["passed"] = row["missing"] == 0 and not row["doubled"] and row["p99_ms"] <= PASS_P99 * 1e3
        print(format_row(kind, len(clients), row), flush=True)
        workers = per_worker(pids, placed, room_of, sent, counts0, counts1, health, cpu, elapsed, backend)
        nodes = per_node(backend, info0, info1, elapsed)
        print_rooms(workers, nodes, row)
        loop.close(clients)
        return {
            "server": kind,
            "code": str(server.code),
            "n": n,
            "room_size": room_size,
            "rooms": rooms,
            "connected_s": connected,
            "step_began_s": began,
            "big": big,
            "period_s": period,
            "big_rate": rate if big else 0,
            "seconds": seconds,
            "steps": [row],
            "workers": workers,
            "redis_nodes": nodes,
        }
    finally:
        server.stop()


def say(members: list[BenchClient], k: int) -> None:
    """A room's k-th message of the step, from its members in turn."""
    members[k % len(members)].say(0, k)


def worker_cpu(pid: int) -> float:
    """Seconds of CPU the process has used (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_wait(pid: int) -> float:
    """Seconds the process's threads have been runnable without a CPU (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError):
            continue
    return total / 1e9


def cpu_pressure() -> float:
    """Seconds in all that some task waited for a CPU (/proc/pressure/cpu; 0 without it)."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return 0.0
    return int(some.rsplit("total=", 1)[1]) / 1e6


def redis_cpu(info: dict) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def worker_values(metrics_dir: str, pid: int, kind: str = "counter") -> dict[str, float]:
    """One worker's values of one kind (`counter`, `gauge_livemin`...), from its own file of
    the multiprocess directory (/metrics sums every worker's)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    path = Path(metrics_dir) / f"{kind}_{pid}.db"
    found: dict[str, float] = {}
    if not path.exists():
        return found
    try:
        metrics = MultiProcessCollector.merge([str(path)], accumulate=False)
    except struct.error:  # a file its worker is making this moment (empty): nothing in it yet
        return found
    for metric in metrics:
        for sample in metric.samples:
            if not sample.name.endswith("_created"):
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


def wait_workers_up(server: ServerProcess, limit: float = 120.0) -> list[int]:
    """Every worker's pid once each has its backplane connected (its own chat_backplane_up, which
    its sampler writes every second). Not by /healthz: an idle server's first worker to wake
    takes nearly every new connection, and the last may answer one in a thousand."""
    deadline = time.monotonic() + limit
    while True:
        pids = server.workers()
        up = [pid for pid in pids if worker_values(server.metrics_dir, pid, "gauge_livemin").get(UP) == 1]
        if len(up) == server.worker_count == len(pids):
            return pids
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{server.kind}: {len(up)} of {server.worker_count} workers up in {limit:.0f} s"
                f" (workers now: {pids}); its log's end:\n{server.log_tail()}"
            )
        time.sleep(0.1)


def health_of_workers(server: ServerProcess, pids: list[int], limit: float = 10.0) -> dict[int, dict]:
    """/healthz of as many workers as answer within `limit` s (a new connection each time,
    taken by whichever worker wakes first: under no load, the same few)."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + limit
    while len(seen) < len(pids) and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503: degraded
            body = json.loads(exc.read())
        seen[body["pid"]] = body
        time.sleep(0.005)
    return seen


def workers_of(server: ServerProcess, clients: list[BenchClient]) -> list[int]:
    """Each client's worker (its pid): the worker that holds the server's end of its socket
    (/proc/net/tcp: the end's inode and peer port; /proc/PID/fd: whose inode it is). Needs no
    counter of the server, so it works on any code."""
    port = f":{server.port:04X}"
    peer_of: dict[str, int] = {}  # socket inode: the client's port
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(port):
            peer_of[fields[9]] = int(fields[2].rsplit(":", 1)[1], 16)
    worker_of: dict[int, int] = {}
    for pid in server.workers():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and (peer := peer_of.get(target[8:-1])):
                worker_of[peer] = pid
    return [worker_of.get(client.sock.getsockname()[1], 0) for client in clients]


UP = "chat_backplane_up"
RECEIVED = "chat_backplane_events_received_total"
OWN = "chat_backplane_events_own_total"
EVENTS_OUT = "chat_events_out_total"


def per_worker(
    pids: list[int],
    placed: list[int],
    room_of: list[int],
    sent: list[int],
    counts0: dict[int, dict[str, float]],
    counts1: dict[int, dict[str, float]],
    health: dict[int, dict],
    cpu: dict[int, float],
    elapsed: float,
    backend: Backend,
) -> list[dict]:
    """Per worker: backplane events received (its counter; on code without one, every message,
    by construction of the single channel) against those of its own rooms (its counter, and
    computed from where the clients are), and the ratio."""
    rows = []
    messages = sum(sent)
    for pid in pids:
        rooms = {room_of[i] for i, where in enumerate(placed) if where == pid}
        clients = sum(1 for where in placed if where == pid)
        before, after = counts0[pid], counts1[pid]

        def delta(name: str, before: dict = before, after: dict = after) -> float | None:
            return after[name] - before.get(name, 0.0) if name in after else None

        received, own = delta(RECEIVED), delta(OWN)
        own_computed = sum(sent[room] for room in rooms)
        if received is None:  # the single channel's code: every worker hears every message
            received_from = "every message: the single channel (no counter in this code)"
            received = float(messages) if backend.nodes else None
        else:
            received_from = "counter"
        own_used = own if own is not None else own_computed
        rows.append(
            {
                "pid": pid,
                "clients": clients,
                "rooms": len(rooms),
                "subscriptions": health.get(pid, {}).get("subscriptions"),
                "received": received,
                "received_from": received_from,
                "own": own,
                "own_computed": own_computed,
                "received_per_own": received / own_used if received is not None and own_used else None,
                "deliveries": delta(EVENTS_OUT),
                "deliveries_computed": sum(sent[room_of[i]] for i, where in enumerate(placed) if where == pid),
                "cpu_pct": 100 * cpu[pid] / elapsed,
            }
        )
    return rows


def per_node(backend: Backend, info0: list[dict], info1: list[dict], elapsed: float) -> list[dict]:
    """Per Redis node over the step: commands/s (INFO stats, and by command: commandstats),
    bytes out/s, CPU."""
    rows = []
    for (port, _), a, b in zip(backend.nodes, info0, info1, strict=True):
        by_command = {
            name.removeprefix("cmdstat_"): (stats["calls"] - a.get(name, {}).get("calls", 0)) / elapsed
            for name, stats in b.items()
            if name.startswith("cmdstat_")
        }
        rows.append(
            {
                "port": port,
                "role": b.get("role"),
                "commands_per_s": (b["total_commands_processed"] - a["total_commands_processed"]) / elapsed,
                "by_command_per_s": {k: round(v, 1) for k, v in sorted(by_command.items(), key=lambda kv: -kv[1]) if v},
                "net_out_bytes_per_s": (b["total_net_output_bytes"] - a["total_net_output_bytes"]) / elapsed,
                "cpu_pct": 100 * (redis_cpu(b) - redis_cpu(a)) / elapsed,
            }
        )
    return rows


def print_rooms(workers: list[dict], nodes: list[dict], row: dict) -> None:
    def figure(value: float | None, spec: str = ",.0f") -> str:
        return "-" if value is None else format(value, spec)

    print(
        f"  {'worker':>8}{'clients':>8}{'rooms':>7}{'subs':>7}{'received':>10}{'own':>9}{'own*':>9}"
        f"{'recv/own':>9}{'deliv':>9}{'deliv*':>9}{'CPU':>6}"
    )
    for w in workers:
        print(
            f"  {w['pid']:>8}{w['clients']:>8}{w['rooms']:>7}{figure(w['subscriptions']):>7}"
            f"{figure(w['received']):>10}{figure(w['own']):>9}{w['own_computed']:>9,}"
            f"{figure(w['received_per_own'], '.2f'):>8}x{figure(w['deliveries']):>9}{w['deliveries_computed']:>9,}"
            f"{w['cpu_pct']:>5.0f}%"
        )
    received = [w["received"] for w in workers if w["received"] is not None]
    if received:
        print(f"  backplane events received in all: {sum(received):,.0f} for {row['sent']:,} messages", end="")
        print(f" ({sum(received) / max(1, row['sent']):.2f} per message)")
    print("  (*: computed from which worker holds each client's socket and what its rooms sent)")
    if any(w["received_from"] != "counter" for w in workers):
        print("  (received: this code counts none; every message, the single channel's by construction)")
    if any(w["own"] is None for w in workers):
        print("  (own: this code counts none; recv/own divides by own*)")
    for node in nodes:
        top = ", ".join(f"{name} {rate:,.0f}" for name, rate in list(node["by_command_per_s"].items())[:6])
        print(
            f"  redis :{node['port']} ({node['role']}): {node['commands_per_s']:,.0f} commands/s ({top});"
            f" {node['net_out_bytes_per_s'] / 1024:,.0f} KiB/s out; CPU {node['cpu_pct']:.0f}%"
        )
    if nodes:
        print(f"  redis CPU in all: {row['redis_cpu_pct']:.0f}%")
    clients = sum(w["clients"] for w in workers)
    print(f"  pings from the server during the step: {row['pings']:,} (its clients: {clients:,})")
    print(
        f"  server's workers runnable but waiting for a CPU (for each other, Redis or other work):"
        f" {row['server_cpu_wait_pct']:.0f}% of the step, summed; machine's CPU pressure (some task"
        f" waiting): {row['cpu_pressure_pct']:.0f}%",
        flush=True,
    )


HEADER = (
    f"{'server':<14}{'N':>6}{'msg/s':>9}{'deliv/s':>10}{'deliv%':>8}{'p50ms':>8}{'p99ms':>8}{'maxms':>8}{'dup':>5}{'lost':>5}"
    f"{'B/dlv':>7}{'srvCPU':>8}{'genCPU':>8}  ok"
)


def format_row(kind: str, n: int, row: dict) -> str:
    pct = 100 * row["delivered"] / row["expected"] if row["expected"] else 0
    return (
        f"{kind:<14}{n:>6}{row['rate']:>9.0f}{row['deliveries_per_s']:>10.0f}{pct:>8.2f}{row['p50_ms']:>8.1f}"
        f"{row['p99_ms']:>8.1f}{row['max_ms']:>8.1f}{row['doubled']:>5}{row['connections_lost']:>5}"
        f"{row['bytes_per_delivery']:>7.0f}"
        f"{row['server_cpu_pct']:>7.0f}%"
        f"{row['bench_cpu_pct']:>7.0f}%  {'yes' if row['passed'] else 'NO'}"
    )


class Backend:
    """What a server kind needs besides itself, fresh for each server and on CPU 0 with it:
    nothing, one redis-server, or a Redis Cluster of three masters and three replicas
    (tests/cluster.py; its nodes without the fixture's fsync'd append-only file). `nodes`: each
    node's (port, pid)."""

    def __init__(self, kind: str, folder: str) -> None:
        self.url: str | None = None
        self.nodes: list[tuple[int, int]] = []
        self._stops: list[Callable[[], None]] = []
        if "cluster" in kind:
            import redis

            from tests.cluster import RedisClusterServers

            cluster = RedisClusterServers(Path(tempfile.mkdtemp(dir=folder, prefix="cluster-"))).start()
            self._stops.append(cluster.stop)
            for node in cluster.nodes:
                assert node.proc is not None
                if shutil.which("taskset"):
                    os.sched_setaffinity(node.proc.pid, {0})
                redis.Redis(port=node.port).config_set("appendonly", "no")
                self.nodes.append((node.port, node.proc.pid))
            self.url = cluster.url
        elif "redis" in kind:
            proc, self.url = start_redis(folder)
            self._stops.append(proc.terminate)
            self.nodes.append((int(self.url.rsplit(":", 1)[1].split("/")[0]), proc.pid))

    def info(self) -> list[dict]:
        """Each node's INFO (every section, commandstats too), in `nodes` order."""
        import redis

        return [redis.Redis(port=port).info("everything") for port, _ in self.nodes]

    def stop(self) -> None:
        for stop in self._stops:
            stop()


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    command = [*pin, shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    proc = subprocess.Popen([*command, "--save", "", "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["fanout", "latency", "ingest", "storm", "idle", "flood", "rooms"])
    parser.add_argument("--n", type=int, default=1000, help="clients (rooms: those in the small rooms)")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--seconds", type=float, help="length of one step (4; rooms: 15; ingest: 8)")
    parser.add_argument(
        "--rate", type=float, help="latency: messages/s in all (20); ingest: offered (60,000); rooms: the big room's"
    )
    parser.add_argument(
        "--room-size", type=int, default=0, help="idle: clients per room (chat; 0: one room); rooms: 5 if 0"
    )
    parser.add_argument("--period", type=float, default=5.0, help="rooms: seconds between a small room's messages")
    parser.add_argument("--big", type=int, default=0, help="rooms: clients in one more room, at --rate")
    parser.add_argument("--settle", type=float, default=60.0, help="idle: seconds idle before measuring")
    parser.add_argument("--servers", default="plain,chat")
    parser.add_argument(
        "--generator",
        choices=["python", "c"],
        default="python",
        help="fanout, latency: the clients of bench/load.py or bench/loadgen (`make bench/loadgen`; not for +deflate)",
    )
    parser.add_argument("--old", default=str(ServerProcess.old_code), help="the code of a KIND@old server")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    seconds = args.seconds or {"rooms": 15.0, "ingest": 8.0}.get(args.mode, 4.0)
    rate = args.rate or (60_000.0 if args.mode == "ingest" else 20.0)
    kinds = args.servers.split(",")
    ServerProcess.old_code = Path(args.old).resolve()
    for kind in kinds:
        check_kind(kind, ServerProcess.old_code)
        if args.mode in ("rooms", "ingest") and kind.startswith("plain"):
            raise SystemExit(f"{args.mode}: the chat's servers only (the plain baseline has one room, and no store)")
    drives = args.mode in ("fanout", "latency", "ingest") and any("+deflate" not in kind for kind in kinds)
    if args.generator == "c" and drives:
        check_loadgen()
        print("generator: bench/loadgen (C), on CPU 1; load.py's clients for a +deflate server", flush=True)
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    # a socket per client here, and as many in the server: 10,000 clients pass 1,024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    if args.mode in ("fanout", "latency", "flood", "rooms"):
        print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for kind in kinds:
            backend = Backend(kind, folder)
            url = backend.url
            try:
                if args.mode == "fanout":
                    results.append(fanout(kind, args.n, args.senders, seconds, folder, url, args.generator))
                elif args.mode == "latency":
                    results.append(latency(kind, args.n, args.senders, rate, 10.0, folder, url, args.generator))
                elif args.mode == "ingest":
                    results.append(ingest(kind, args.n, args.senders, rate, seconds, folder, url, args.generator))
                elif args.mode == "storm":
                    results.append(storm(kind, args.n, folder, url))
                elif args.mode == "flood":
                    results.append(flood(kind, rate, 10.0, folder))
                elif args.mode == "rooms":
                    size = args.room_size or 5
                    results.append(rooms(kind, args.n, size, args.big, args.period, rate, seconds, folder, backend))
                else:
                    results.append(idle(kind, args.n, args.room_size, args.settle, folder, url))
            finally:
                backend.stop()
    if args.mode == "fanout":
        summarise(results)
    os.makedirs(args.out, exist_ok=True)
    path = Path(args.out) / f"{args.mode}-n{args.n}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "nofile": hard}
    path.write_text(
        json.dumps({"mode": args.mode, "args": vars(args), "machine": machine, "results": results}, indent=2)
    )
    print(f"\nwritten: {path}")


def summarise(results: list[dict]) -> None:
    print("\nbest passing step per server:")
    baseline = next((r["best"] for r in results if r["server"] == "plain" and r["best"]), None)
    for result in results:
        best = result["best"]
        if best is None:
            print(f"  {result['server']:<14} N={result['n']}: no passing step")
            continue
        ratio = f"  {best['deliveries_per_s'] / baseline['deliveries_per_s']:.1f}x plain" if baseline else ""
        print(f"  {result['server']:<14} N={result['n']}: {best['deliveries_per_s']:,.0f} deliveries/s{ratio}")


if __name__ == "__main__":
    main()
