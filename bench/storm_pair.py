"""A storm of connects, as the clients already there feel it: a pair talks in one room (a
message every 20 ms, each timed until the other one has it) while N clients connect at once to
another room of the same worker. Prints the pair's latency during the storm, the storm's
length, and the tracebacks and refusals in the server's log; with --hold, the pair's latency
while the N stay connected and idle that many seconds more (the worker pings them meanwhile).

    .venv/bin/python bench/storm_pair.py 3000 [--kind chat] [--hold 60]

The server is pinned to CPU 0 (bench/run.py's ServerProcess); run this on CPU 1 (taskset -c 1).
gunicorn settings can be tried through GUNICORN_CMD_ARGS (say, "--worker-connections 1000").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.load import Loop
from bench.run import ServerProcess

GAP = 0.02  # seconds between the pair's messages


def talk(port: int, stop: threading.Event, latencies: list[float]) -> None:
    """The pair: a says m1, m2, ...; each is timed until b has it."""
    base = f"ws://127.0.0.1:{port}/ws?room=pair&name="
    a, b = connect(base + "a", open_timeout=30), connect(base + "b", open_timeout=30)
    for ws in (a, b):
        while json.loads(ws.recv(timeout=30).split("\n")[0])["type"] != "welcome":
            pass
    n = 0
    while not stop.is_set():
        n += 1
        start = time.monotonic()
        a.send(json.dumps({"type": "message", "text": f"m{n}"}))
        while not any(
            e["type"] == "message" and e["text"] == f"m{n}" for e in map(json.loads, b.recv(timeout=30).split("\n"))
        ):
            pass
        latencies.append(time.monotonic() - start)
        time.sleep(GAP)
    a.close()
    b.close()


def figures(latencies: list[float]) -> str:
    ordered = sorted(latencies) or [float("nan")]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(ordered)} messages, p50 {ordered[len(ordered) // 2] * 1000:.0f} ms,"
        f" p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="clients connecting at once")
    parser.add_argument("--kind", default="chat", help="a bench/run.py server kind (KIND@old: see bench/run.py)")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds the N stay idle after the storm")
    args = parser.parse_args()
    server = ServerProcess(args.kind, tempfile.mkdtemp(), None)
    latencies: list[float] = []
    stop = threading.Event()
    pair = threading.Thread(target=talk, args=(server.port, stop, latencies), daemon=True)
    try:
        pair.start()
        while len(latencies) < 20:  # the pair talks before the storm
            if not pair.is_alive():
                raise SystemExit("the pair could not talk")
            time.sleep(0.05)
        before = len(latencies)
        loop, start = Loop(), time.monotonic()
        clients = server.connect(loop, server.path, args.n, 1, at_once=args.n)
        upgraded = time.monotonic() - start
        loop.wait_quiet(clients, still=0.05, limit=120)
        welcomed = time.monotonic() - start
        stormed = len(latencies)
        loop.run(lambda: False, args.hold)  # the pair talks on; the N are idle, their pings answered
        stop.set()
        pair.join(35)
        print(
            f"{args.n} at once: upgraded in {upgraded:.2f} s, all welcomed and quiet in {welcomed:.2f} s;"
            f" the pair meanwhile: {figures(latencies[before:stormed])}"
        )
        if args.hold:
            print(f"then {args.hold:.0f} s with the {args.n} idle: the pair {figures(latencies[stormed:])}")
        loop.close(clients)
    finally:
        stop.set()
        server.stop()
        log = server.log.read_text(errors="replace")
        print(f"server log: {log.count('Traceback')} tracebacks, {log.count('refused')} refusals")


if __name__ == "__main__":
    main()
