"""History figures: time to store one message, and time until a welcome with 50 messages of
history reaches a client (connect, handshake, join, history read, welcome).

    .venv/bin/python bench/history.py [--appends 5000] [--joins 300]

Starts its own gunicorn (one gevent worker, pinned to CPU 0 when taskset exists) on a free
loopback port with a temporary database; the client runs here, pinned to CPU 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import free_port, percentile  # noqa: E402
from chatapp.store import append  # noqa: E402
from chatapp.store.sqlite import SQLiteStore  # noqa: E402


def store_append(appends: int, folder: str) -> float:
    store = SQLiteStore(os.path.join(folder, "append.sqlite3"), history_limit=1000)
    user = {"id": "c1", "name": "bench"}
    for n in range(2000):  # a room at its limit, so pruning is part of the figure
        append(store, "r", {"ts": time.time(), "user": user, "text": f"warm {n}"})
    start = time.perf_counter()
    for n in range(appends):
        append(store, "r", {"ts": time.time(), "user": user, "text": f"message {n}", "cid": f"k{n}"})
    return (time.perf_counter() - start) / appends


def start_server(folder: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = {**os.environ, "DATABASE_PATH": os.path.join(folder, "chat.sqlite3"), "RATE_LIMIT": "1000"}
    command = [*pin, sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([*command, "--no-control-socket", "wsgi:app"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def welcome_latency(port: int, joins: int) -> list[float]:
    url = f"ws://127.0.0.1:{port}/ws?room=bench&name=bench"
    with connect(url) as ws:
        ws.recv(timeout=5)
        for n in range(50):
            ws.send(json.dumps({"type": "message", "text": f"history line {n} " + "x" * 80, "cid": str(n)}))
        while '"cid":"49"' not in ws.recv(timeout=5):
            pass  # stored once echoed
    times = []
    for _ in range(joins):
        start = time.perf_counter()
        with connect(url) as ws:
            welcome = json.loads(ws.recv(timeout=5).split("\n")[0])
            times.append(time.perf_counter() - start)
            assert welcome["type"] == "welcome" and len(welcome["history"]) == 50
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=5000)
    parser.add_argument("--joins", type=int, default=300)
    args = parser.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as folder:
        append = store_append(args.appends, folder)
        proc, port = start_server(folder)
        try:
            times = welcome_latency(port, args.joins)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {
        "store_append_us": round(append * 1e6, 1),
        "welcome_50_history_ms": {
            "p50": round(statistics.median(times) * 1e3, 2),
            "p99": round(percentile(sorted(times), 99) * 1e3, 2),
            "max": round(max(times) * 1e3, 2),
            "joins": len(times),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
