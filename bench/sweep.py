"""Presence's heartbeat, counted: the Redis commands and round trips one beat of W workers'
sweeps costs with R rooms listed (work, not time: the same on any number of cores).

    .venv/bin/python bench/sweep.py [--workers 8] [--rooms 400]

Starts its own redis-server on a free loopback port. Each worker asks for the sweeper's lease
and, if it holds it, sweeps, as its heartbeat does. Run from an earlier commit's folder (say a
worktree), it counts that code's beat: the baseline.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import free_port  # noqa: E402
from chatapp.realtime.presence.redis import RedisPresence  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rooms", type=int, default=400)
    args = parser.parse_args()
    port, folder = free_port(), tempfile.mkdtemp()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        workers = [RedisPresence(client, 30.0) for _ in range(args.workers)]
        for n in range(args.rooms):
            workers[n % args.workers].add(f"room-{n}", f"c{n}", {"id": f"c{n}"})
        before = client.info("stats")
        sweepers = 0
        for worker in workers:
            if getattr(worker, "leased", lambda: True)():  # code before the lease: every worker sweeps
                sweepers += 1
                worker.sweep()
        after = client.info("stats")
        print(
            f"{args.workers} workers, {args.rooms} rooms: one beat's sweep by {sweepers} worker(s): "
            f"{after['total_commands_processed'] - before['total_commands_processed'] - 1} Redis commands "
            f"(those inside scripts included), {after['total_net_input_bytes'] - before['total_net_input_bytes']} "
            "bytes to Redis"
        )
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
