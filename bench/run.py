"""The benchmark runner: starts each server, drives it with bench/load.py's clients, prints
a table and writes JSON (bench/results/). One process and one thread; the server is pinned
to CPU 0 and this process to CPU 1 (taskset and sched_setaffinity), as on the 2-core machine
the figures in the README come from.

    .venv/bin/python bench/run.py fanout --n 1000 --servers plain,chat
    .venv/bin/python bench/run.py fanout --n 1000 --servers chat-redis,chat-redis-2w
    .venv/bin/python bench/run.py latency --n 1000 --rate 20
    .venv/bin/python bench/run.py storm --n 1000
    .venv/bin/python bench/run.py idle --n 10000 --room-size 0
    .venv/bin/python bench/run.py fanout --n 1000 --servers plain+deflate,chat+deflate
    .venv/bin/python bench/run.py flood --rate 10 --servers chat,chat+limits

Modes. flood: a pair talks at --rate while two clients stream typing events as fast as they
can (`chat+limits`: with the default per-connection frame budget).
latency: a fixed rate into one room of N. storm: N clients at once (handshakes/s, time
until all are welcomed). idle: N idle connections (server memory per connection, after
--settle seconds idle), then one broadcast that must reach them all; one room, or rooms of
--room-size (chat). A `+deflate` server (plain+deflate, chat+deflate): clients offer
permessage-deflate, as browsers do. Fan-out ramp: N clients in one room, S of them sending
at a total rate that grows by half each step; a step passes when >= 99% of deliveries
arrive with p99 latency <= 250 ms. The figure of a server is its best passing step.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
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

from bench.load import BenchClient, Loop, connect_all, free_port, percentile  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PASS_DELIVERED = 0.99
PASS_P99 = 0.250
API_TOKEN = "bench-token"


class ServerProcess:
    """One server under test: `plain` (the baseline), `chat`, `chat-redis`, `chat-redis-2w`."""

    def __init__(self, kind: str, folder: str, redis_url: str | None) -> None:
        self.kind = kind
        # `+deflate`: clients offer permessage-deflate, as browsers do, and the chat turns it on
        self.deflate = kind.endswith("+deflate")
        # `+limits`: the chat's per-connection frame budget at its default (off for the other
        # modes, whose senders send far more than a person)
        limits = kind.endswith("+limits")
        kind = kind.removesuffix("+deflate").removesuffix("+limits")
        self.port = free_port()
        cores = "0,1" if kind.endswith("-2w") else "0"
        pin = ["taskset", "-c", cores] if shutil.which("taskset") else []
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
            "ANNOUNCE_LIMIT": "0",
            "CONNECT_RATE_LIMIT": "0",
            **({} if limits else {"FRAME_RATE_LIMIT": "0"}),
        }
        if kind == "plain":
            # stock gunicorn settings (-c /dev/null: not the chat's gunicorn.conf.py), 20,000 connections
            command = [*base, "-c", "/dev/null", "-w", "1", "--worker-connections", "20000", "bench.baseline_app:app"]
        else:
            command = [*base, *(["-w", "2"] if kind.endswith("-2w") else []), "wsgi:app"]
            if "redis" in kind:
                env["REDIS_URL"] = redis_url or ""
        self.protocol = "plain" if kind == "plain" else "chat"
        self.proc = subprocess.Popen([*pin, *command], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
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
                    raise SystemExit(f"{kind} did not start") from None
                time.sleep(0.1)

    def path(self, i: int, room_size: int = 0) -> str:
        """Client i's URL: one room for all, or rooms of `room_size` (chat only)."""
        if self.protocol == "plain":
            return "/ws"
        return f"/ws?room={f'r{i // room_size}' if room_size else 'bench'}&name=c{i}"

    def connect(self, loop: Loop, path: Callable[[int], str], n: int, senders: int, at_once: int) -> list[BenchClient]:
        return connect_all(loop, "127.0.0.1", self.port, path, self.protocol, n, senders, at_once, self.deflate)

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def cpu(self) -> float:
        total = 0
        for pid in self.workers():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / TICK

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


def step(
    server: ServerProcess, loop: Loop, clients: list[BenchClient], senders: int, rate: float, seconds: float
) -> dict:
    """Send `rate` messages/s in all, round-robin from the first `senders` clients, for
    `seconds`; then wait (5 s at most) for the last deliveries, and measure."""
    for client in clients:
        client.lat = []
        client.dups = client.gaps = 0
    base = [client.delivered for client in clients]
    received = sum(client.received for client in clients)
    sent = [0] * senders
    start_seq = list(clients[0].got)
    total = int(rate * seconds)
    cpu0, own0, start = server.cpu(), time.process_time(), time.time()

    def sending() -> bool:
        """Send what is due by now (an even stream, not bursts); True once all is sent."""
        due_count = min(total, int((time.time() - start) * rate) + 1)
        while sum(sent) < due_count:
            sender = sum(sent) % senders
            clients[sender].say(sender, start_seq[sender] + sent[sender])
            sent[sender] += 1
        return due_count == total

    loop.run(sending, seconds + 10, tick=0.001)
    loop.run(lambda: all(c.delivered - b >= total for c, b in zip(clients, base, strict=True)), 5.0)
    elapsed = time.time() - start
    cpu, own = server.cpu() - cpu0, time.process_time() - own0
    latencies = sorted(x for client in clients for x in client.lat)
    expected = len(clients) * total
    delivered = sum(client.delivered for client in clients) - sum(base)
    row = {
        "rate": rate,
        "sent": total,
        "expected": expected,
        "delivered": delivered,
        "missing": expected - delivered,
        "doubled": sum(c.dups for c in clients),
        "connections_lost": sum(1 for c in clients if not c.open),
        "deliveries_per_s": delivered / seconds,  # over the send window; late ones fail the p99 rule
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1e3,
        "frames": sum(c.frames for c in clients),
        "bytes_per_delivery": (sum(c.received for c in clients) - received) / max(1, delivered),
        "server_cpu_pct": 100 * cpu / elapsed,
        "bench_cpu_pct": 100 * own / elapsed,
        "server_rss_mb": server.rss_mb(),
    }
    row["passed"] = delivered >= PASS_DELIVERED * expected and row["p99_ms"] <= PASS_P99 * 1e3 and not row["doubled"]
    return row


def one_room(server: ServerProcess, n: int, senders: int) -> tuple[Loop, list[BenchClient]]:
    loop = Loop()
    clients = server.connect(loop, server.path, n, senders, at_once=200)
    loop.wait_quiet(clients, still=0.5, limit=60)
    wait_ready(server, loop, clients)
    return loop, clients


def fanout(kind: str, n: int, senders: int, seconds: float, folder: str, redis_url: str | None) -> dict:
    server = ServerProcess(kind, folder, redis_url)
    try:
        loop, clients = one_room(server, n, senders)
        rate, rows = max(1.0, 10_000 / n), []
        for _ in range(16):
            row = step(server, loop, clients, senders, rate, seconds)
            rows.append(row)
            print(format_row(kind, n, row), flush=True)
            if not row["passed"]:
                break
            loop.wait_quiet(clients, still=0.3, limit=60)
            rate *= 1.5
        passing = [r for r in rows if r["passed"]]
        best = max(passing, key=lambda r: r["deliveries_per_s"]) if passing else None
        loop.close(clients)
        return {"server": kind, "n": n, "senders": senders, "steps": rows, "best": best}
    finally:
        server.stop()


def latency(kind: str, n: int, senders: int, rate: float, seconds: float, folder: str, redis_url: str | None) -> dict:
    """A fixed rate into one room of N: the latency a person feels, not the peak."""
    server = ServerProcess(kind, folder, redis_url)
    try:
        loop, clients = one_room(server, n, senders)
        row = step(server, loop, clients, senders, rate, seconds)
        print(format_row(kind, n, row), flush=True)
        loop.close(clients)
        return {"server": kind, "n": n, "senders": senders, "steps": [row], "best": row if row["passed"] else None}
    finally:
        server.stop()


def storm(kind: str, n: int, folder: str, redis_url: str | None) -> dict:
    """N clients at once into one room: handshakes/s, and the time until every one is welcomed."""
    server = ServerProcess(kind, folder, redis_url)
    try:
        loop = Loop()
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
        }
        print(
            f"{kind:<14}{n:>6}  upgraded in {upgraded:.2f} s ({n / upgraded:,.0f} handshakes/s),"
            f" all welcomed and quiet in {settled:.2f} s; CPU server {server_cpu:.2f} s, generator {own:.2f} s",
            flush=True,
        )
        loop.close(clients)
        return result
    finally:
        server.stop()


def broadcast(
    server: ServerProcess, loop: Loop, clients: list[BenchClient], rooms: list[str], limit: float = 60.0
) -> float:
    """One message to every client (chat: posted by the HTTP API to each room; plain: sent by
    the first client); the seconds until all have it. SystemExit if some lack it after `limit`."""
    base = [client.delivered for client in clients]
    start = time.monotonic()
    if server.protocol == "plain":
        clients[0].say(0, clients[0].got[0])
        rooms = []
    for room in rooms:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/rooms/{room}/messages",
            data=json.dumps({"text": "broadcast", "name": "bench"}).encode(),
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()
    if not loop.run(lambda: all(c.delivered > b for c, b in zip(clients, base, strict=True)), limit):
        missing = sum(1 for c, b in zip(clients, base, strict=True) if c.delivered == b)
        raise SystemExit(f"the broadcast did not reach {missing} of {len(clients)} clients in {limit:.0f} s")
    return time.monotonic() - start


def flood(kind: str, rate: float, seconds: float, folder: str) -> dict:
    """Two clients stream typing events as fast as they can (cheap for them, and each one work
    for the server) while a pair in another room talks at `rate` messages/s: the pair's latency,
    and what became of the flooders (`chat+limits`: the default frame budget closes them)."""
    server = ServerProcess(kind, folder, None)
    stop, sent, closed = threading.Event(), [0, 0], [False, False]
    typing = b'{"type":"typing"}'
    burst = bytes((0x81, 0x80 | len(typing))) + b"\0\0\0\0" + typing  # masked with zeros

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
        row = step(server, loop, pair, 2, rate, seconds)
        stop.set()
        for thread in threads:
            thread.join(10)
        row.update(flood_frames_sent=sum(sent), flooders_closed=sum(closed))
        print(format_row(kind, 2, row), f"flood: {sum(sent)} frames sent, {sum(closed)} of 2 closed", flush=True)
        loop.close(pair)
        return {"server": kind, "n": 2, "senders": 2, "steps": [row], "best": row if row["passed"] else None}
    finally:
        server.stop()


def wait_ready(server: ServerProcess, loop: Loop, clients: list[BenchClient]) -> None:
    """Wait until the server delivers to every client. The chat has once it welcomed them; the
    baseline says nothing when its handler has put a new socket in its set, some time after
    the 101, so a step started at once would miss some: broadcast until one reaches all."""
    for _ in range(30):
        try:
            broadcast(server, loop, clients, ["bench"], limit=2.0)
            break
        except SystemExit:
            continue
    else:
        raise SystemExit("the server never delivered to every client")
    loop.wait_quiet(clients, still=0.3, limit=60)


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
        took = broadcast(server, loop, warm + clients, rooms)
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
    parser.add_argument("mode", choices=["fanout", "latency", "storm", "idle", "flood"])
    parser.add_argument("--n", type=int, default=1000, help="clients")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one step")
    parser.add_argument("--rate", type=float, default=20.0, help="latency: messages/s in all")
    parser.add_argument("--room-size", type=int, default=0, help="idle: clients per room (chat; 0: one room)")
    parser.add_argument("--settle", type=float, default=60.0, help="idle: seconds idle before measuring")
    parser.add_argument("--servers", default="plain,chat")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    results = []
    if args.mode in ("fanout", "latency", "flood"):
        print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        redis_proc, redis_url = start_redis(folder) if "redis" in args.servers else (None, None)
        try:
            for kind in args.servers.split(","):
                if args.mode == "fanout":
                    results.append(fanout(kind, args.n, args.senders, args.seconds, folder, redis_url))
                elif args.mode == "latency":
                    results.append(latency(kind, args.n, args.senders, args.rate, 10.0, folder, redis_url))
                elif args.mode == "storm":
                    results.append(storm(kind, args.n, folder, redis_url))
                elif args.mode == "flood":
                    results.append(flood(kind, args.rate, 10.0, folder))
                else:
                    results.append(idle(kind, args.n, args.room_size, args.settle, folder, redis_url))
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
    if args.mode == "fanout":
        summarise(results)
    os.makedirs(args.out, exist_ok=True)
    path = Path(args.out) / f"{args.mode}-n{args.n}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
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
