"""A real Redis Cluster for the tests: six redis-server processes on loopback ports (three
masters, three replicas), made one cluster by `redis-cli --cluster create`."""

from __future__ import annotations

import gc
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.helpers import RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 2000  # how long a master may be silent before its replica takes over


def cluster_port(taken: set[int] | frozenset[int] = frozenset()) -> int:
    """A free port whose cluster bus port (10,000 above it) is free too, and below 65,536, and
    neither of them `taken` (the ports chosen for the other nodes, not listening yet: the
    kernel may offer one of them again)."""
    while True:
        port = free_port()
        if port + 10000 < 65536 and not {port, port + 10000} & taken:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def close(client: redis.Redis) -> None:
    """Close a client and its connections: a RedisCluster's close() leaves its nodes' pools
    open (a pool given to a client is not closed with it), for the garbage collector to find."""
    if isinstance(client, redis.RedisCluster):
        for node in client.get_nodes():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
    client.close()
    if isinstance(client, redis.RedisCluster):
        # redis-py's cluster client also drops node clients of its own when it refreshes the
        # slots, their sockets open: collected here, quietly, not in whichever test runs next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


class RedisClusterServers:
    """Three masters and three replicas; `url` names one node (any node will do)."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        for n in range(2 * masters):
            self.nodes.append(RedisServer(folder / f"node-{n}", cluster_port(self._taken())))
        self.masters = masters
        self.url = self.nodes[0].url

    def _taken(self) -> set[int]:
        return {port for node in self.nodes for port in (node.port, node.port + 10000)}

    def start(self) -> RedisClusterServers:
        try:
            return self._start()
        except BaseException:
            self.stop()  # the nodes that did start: none left running past the test
            raise

    def _start(self) -> RedisClusterServers:
        for node in self.nodes:
            for attempt in range(3):
                try:
                    self.start_node(node)
                    break
                except RuntimeError:  # its port or bus port taken since it was chosen (a busy machine)
                    if attempt == 2:
                        raise
                    node.port = cluster_port(self._taken())
                    node.url = f"redis://127.0.0.1:{node.port}/0"
        self.url = self.nodes[0].url
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.wait_ok()
        self.wait_replicas()
        return self

    def wait_replicas(self, timeout: float = 30.0) -> None:
        """Until every master has a replica in sync with it: a replica that never synced will
        not take over (its data counts as too old), and a write before it syncs is not on it."""
        deadline = time.monotonic() + timeout
        while True:
            replicas = [self.cli(node, "info", "replication") for node in self.live()]
            views = [self.cli(node, "cluster", "nodes") for node in self.live()]  # known to all
            known = all(
                sum("slave" in line.split()[2] for line in view.splitlines() if line) >= self.masters for view in views
            )
            if known and sum("master_link_status:up" in info for info in replicas) >= self.masters:
                return
            assert time.monotonic() < deadline, f"the replicas did not sync:\n{self.report()}"
            time.sleep(0.1)  # a replica syncing: no event to await from outside

    def report(self) -> str:
        """Each node's port, whether it runs, its role and link, and the end of its log."""
        lines = []
        for node in self.nodes:
            try:
                info = self.cli(node, "info", "replication") if node in self.live() else "not running"
            except subprocess.SubprocessError as exc:
                info = f"no answer ({exc})"
            status = " ".join(part for part in info.split() if part.startswith(("role:", "master_link_status:")))
            log = node.folder / "redis.log"
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            lines += [f"{node.port}: {status}", *(f"    {line}" for line in tail)]
        return "\n".join(lines)

    def start_node(self, node: RedisServer) -> None:
        """Start (or start again: its folder keeps its cluster config and data) one node."""
        # A replica syncs at once (not after the 5 s a master waits by default for more replicas
        # to share the transfer); each node logs to its folder, for a failure to show.
        node.start(
            "--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--repl-diskless-sync-delay", "0", "--logfile", str(node.folder / "redis.log"),
        )  # fmt: skip

    def cli(self, node: RedisServer, *args: str) -> str:
        result = subprocess.run(
            [REDIS_CLI, "-p", str(node.port), *args], check=True, capture_output=True, text=True, timeout=10
        )
        return result.stdout

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok (all slots served)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all("cluster_state:ok" in self.cli(node, "cluster", "info") for node in self.live()):
                    return
            except subprocess.SubprocessError:
                pass
            assert time.monotonic() < deadline, "the cluster did not become ok"
            time.sleep(0.1)  # a cluster settling: no event to await from outside

    def slots(self) -> dict[int, tuple[int, int]]:
        """Each master's port -> the first and last slot it serves (one range each, as made)."""
        found = {}
        for line in self.cli(self.live()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8:
                low, _, high = fields[8].partition("-")
                found[int(fields[1].split(":")[1].split("@")[0])] = (int(low), int(high or low))
        return found

    def live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def rooms_by_master(self, prefix: str, per_master: int = 1) -> dict[int, list[str]]:
        """Room names (`prefix`-N) whose slot each master serves: `per_master` each."""
        slots = self.slots()
        found: dict[int, list[str]] = {port: [] for port in slots}
        n = 0
        while any(len(rooms) < per_master for rooms in found.values()):
            room = f"{prefix}-{n}"
            slot = key_slot(f"chat:{{{room}}}:events".encode())
            port = next(port for port, (low, high) in slots.items() if low <= slot <= high)
            if len(found[port]) < per_master:
                found[port].append(room)
            n += 1
        return found

    def move_slot(self, key: str, source: int, target: int) -> None:
        """Move `key`'s slot from the master at port `source` to the one at `target`, keys and
        all, as `redis-cli --cluster reshard` moves a slot."""
        slot = key_slot(key.encode())
        src, dst = (redis.Redis(port=port) for port in (source, target))
        src_id, dst_id = (client.execute_command("CLUSTER", "MYID") for client in (src, dst))
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        others = [port for port in self.slots() if port not in (source, target)]
        for port in (target, source, *others):  # every master learns it; the target first
            with redis.Redis(port=port) as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for client in (src, dst):
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
