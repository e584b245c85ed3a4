"""A real Redis Cluster for the tests: six redis-server processes on loopback ports (three
masters, three replicas), made one cluster by `redis-cli --cluster create`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 2000  # how long a master may be silent before its replica takes over


def cluster_port() -> int:
    """A free port whose cluster bus port (10,000 above it) is free too, and below 65,536."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class RedisClusterServers:
    """Three masters and three replicas; `url` names one node (any node will do)."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.nodes = [RedisServer(folder / f"node-{n}", cluster_port()) for n in range(2 * masters)]
        self.masters = masters
        self.url = self.nodes[0].url

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start("--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS))
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.wait_ok()
        return self

    def cli(self, node: RedisServer, *args: str) -> str:
        result = subprocess.run(
            [REDIS_CLI, "-p", str(node.port), *args], check=True, capture_output=True, text=True, timeout=10
        )
        return result.stdout

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok (all slots served)."""
        deadline = time.monotonic() + timeout
        while True:
            live = [node for node in self.nodes if node.proc is not None and node.proc.poll() is None]
            try:
                if all("cluster_state:ok" in self.cli(node, "cluster", "info") for node in live):
                    return
            except subprocess.SubprocessError:
                pass
            assert time.monotonic() < deadline, "the cluster did not become ok"
            time.sleep(0.1)  # a cluster settling: no event to await from outside

    def master_of(self, key: str) -> RedisServer:
        """The node that serves `key`'s slot now."""
        slot = int(self.cli(self.nodes[0], "cluster", "keyslot", key))
        for line in self.cli(self.nodes[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2]:
                for part in fields[8:]:
                    low, _, high = part.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        port = int(fields[1].split(":")[1].split("@")[0])
                        return next(node for node in self.nodes if node.port == port)
        raise AssertionError(f"no master serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
