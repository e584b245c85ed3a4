"""A storm of connects, as the clients already there feel it: a pair talks in one room (a
message every 20 ms, each timed until the other one has it) while N clients connect at once to
another room of the same worker. Prints the pair's latency during the storm, the storm's
length, and the tracebacks and refusals in the server's log.

    .venv/bin/python bench/storm_pair.py 3000 [--kind chat]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="clients connecting at once")
    parser.add_argument("--kind", default="chat", help="a bench/run.py server kind")
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
        stop.set()
        pair.join(35)
        during = sorted(latencies[before:]) or [float("nan")]
        print(
            f"{args.n} at once: upgraded in {upgraded:.2f} s, all welcomed and quiet in {welcomed:.2f} s; the pair"
            f" meanwhile: {len(during)} messages, p50 {during[len(during) // 2] * 1000:.0f} ms,"
            f" max {during[-1] * 1000:.0f} ms"
        )
        loop.close(clients)
    finally:
        stop.set()
        server.stop()
        log = server.log.read_text(errors="replace")
        print(f"server log: {log.count('Traceback')} tracebacks, {log.count('refused')} refusals")


if __name__ == "__main__":
    main()
