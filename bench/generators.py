"""The two load generators behind bench/run.py's steps, with one interface (`Generator`):

- `PythonGenerator`: bench/load.py's clients in the runner's own process (one epoll loop);
  the only one that speaks permessage-deflate, and the one of every mode but fanout and
  latency.
- `CGenerator`: bench/loadgen.c (`make bench/loadgen`), a process of its own pinned to CPU 1,
  driven over its stdin and stdout one line at a time (the commands are in its header). It
  checks every delivery as load.py does, at a small part of the CPU per delivery, so the
  server is the limit of a fan-out figure, not the generator.

A step's row from either has the keys of run.py's step row but the server's, which
run.py's `step` adds; and `gaps` (holes in the ids or numbers) and `elapsed_s`, the step's
wall time, sending and the wait after (the generator's CPU is over it, and so is the
server's). bench/loadgen's adds `latency_samples`, `reads` and `waits` (its recvmsg and
epoll_wait calls: what its CPU goes on).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Protocol

from bench.load import BenchClient, Loop, percentile

LOADGEN = Path(__file__).resolve().parent / "loadgen"


def check_loadgen() -> None:
    """SystemExit unless bench/loadgen is built from the bench/loadgen.c of this tree."""
    source = LOADGEN.with_suffix(".c")
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < source.stat().st_mtime:
        raise SystemExit(f"{LOADGEN} is missing or older than {source.name}: `make bench/loadgen` first")


class Generator(Protocol):
    kind: str  # "python" or "c", recorded in the results

    def quiet(self, still: float, limit: float) -> None:
        """Serve until every client is welcomed and no frame came for `still` s; SystemExit
        after `limit` s."""

    def mark(self) -> None:
        """Remember each client's count of deliveries (for `reached`)."""

    def say(self, sender: int) -> None:
        """Client `sender` sends its next message."""

    def reached(self, limit: float) -> int:
        """Serve until every client has a delivery since the mark, `limit` s at most; the
        clients still without one."""

    def step(self, senders: int, rate: float, seconds: float) -> dict:
        """Send `rate` messages/s in all, round-robin from the first `senders` clients, for
        `seconds`; wait (5 s at most) for the last deliveries; the row, the server's figures aside."""

    def close(self) -> None: ...


class PythonGenerator:
    """bench/load.py's clients, in this process."""

    kind = "python"

    def __init__(self, loop: Loop, clients: list[BenchClient]) -> None:
        self.loop = loop
        self.clients = clients
        self.base = [0] * len(clients)

    def quiet(self, still: float, limit: float) -> None:
        self.loop.wait_quiet(self.clients, still, limit)

    def mark(self) -> None:
        self.base = [client.delivered for client in self.clients]

    def say(self, sender: int) -> None:
        self.clients[sender].say(sender, self.clients[0].got[sender])

    def reached(self, limit: float) -> int:
        pairs = list(zip(self.clients, self.base, strict=True))
        self.loop.run(lambda: all(c.delivered > b for c, b in pairs), limit)
        return sum(1 for c, b in pairs if c.delivered == b)

    def step(self, senders: int, rate: float, seconds: float) -> dict:
        clients = self.clients
        for client in clients:
            client.lat = []
            client.dups = client.gaps = 0
        base = [client.delivered for client in clients]
        received = sum(client.received for client in clients)
        sent = [0] * senders
        start_seq = list(clients[0].got)
        total = int(rate * seconds)
        own0, start = time.process_time(), time.time()

        def sending() -> bool:
            """Send what is due by now (an even stream, not bursts); True once all is sent."""
            due_count = min(total, int((time.time() - start) * rate) + 1)
            while sum(sent) < due_count:
                sender = sum(sent) % senders
                clients[sender].say(sender, start_seq[sender] + sent[sender])
                sent[sender] += 1
            return due_count == total

        self.loop.run(sending, seconds + 10, tick=0.001)
        self.loop.run(lambda: all(c.delivered - b >= total for c, b in zip(clients, base, strict=True)), 5.0)
        elapsed = time.time() - start
        own = time.process_time() - own0
        latencies = sorted(x for client in clients for x in client.lat)
        expected = len(clients) * total
        delivered = sum(client.delivered for client in clients) - sum(base)
        return {
            "rate": rate,
            "sent": total,
            "expected": expected,
            "delivered": delivered,
            "missing": expected - delivered,
            "doubled": sum(c.dups for c in clients),
            "gaps": sum(c.gaps for c in clients),  # ids or numbers skipped: holes in the order
            "connections_lost": sum(1 for c in clients if not c.open),
            "deliveries_per_s": delivered / seconds,  # over the send window; late ones fail the p99 rule
            "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3,
            "max_ms": (latencies[-1] if latencies else float("nan")) * 1e3,
            "frames": sum(c.frames for c in clients),
            "bytes_per_delivery": (sum(c.received for c in clients) - received) / max(1, delivered),
            "bench_cpu_pct": 100 * own / elapsed,
            "elapsed_s": elapsed,
        }

    def close(self) -> None:
        self.loop.close(self.clients)


class CGenerator:
    """bench/loadgen: N clients at `path` (`{i}`: the client's number), connected and (chat)
    welcomed when this returns. Each command waits for its one-line answer, `limit` s at most;
    a generator that exits or does not answer in time is a SystemExit (its own message is on
    stderr, which it shares with this process)."""

    kind = "c"

    def __init__(self, port: int, path: str, protocol: str, n: int, senders: int, at_once: int) -> None:
        check_loadgen()
        pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []  # the server is on CPU 0
        command = [str(LOADGEN), "--port", str(port), "--path", path, "--protocol", protocol]
        command += ["--n", str(n), "--senders", str(senders), "--at-once", str(at_once)]
        self.proc = subprocess.Popen([*pin, *command], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pending = b""
        self._answer(limit=180 + n / 100)  # {"ready": true, ...}: it gives up on a stall itself

    def _ask(self, command: str, limit: float) -> dict:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it exited: _answer says so
        return self._answer(limit)

    def _answer(self, limit: float) -> dict:
        assert self.proc.stdout is not None
        out = self.proc.stdout.fileno()
        deadline = time.monotonic() + limit
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                self.proc.kill()
                raise SystemExit(f"bench/loadgen did not answer in {limit:.0f} s")
            chunk = os.read(out, 65536)
            if not chunk:
                raise SystemExit(f"bench/loadgen exited (status {self.proc.wait(10)}; its message is above)")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return json.loads(line)

    def quiet(self, still: float, limit: float) -> None:
        if not self._ask(f"quiet {still} {limit}", limit + 10)["quiet"]:
            raise SystemExit("the clients never settled")

    def mark(self) -> None:
        self._ask("mark", 10)

    def say(self, sender: int) -> None:
        self._ask(f"say {sender}", 10)

    def reached(self, limit: float) -> int:
        return self._ask(f"delivered {limit}", limit + 10)["behind"]

    def step(self, senders: int, rate: float, seconds: float) -> dict:
        row = self._ask(f"step {rate!r} {seconds!r} {senders}", seconds + 30)
        row["rate"] = rate
        return row

    def close(self) -> None:
        """`quit` (it closes its sockets and exits, answering nothing), or a kill after 10 s."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
