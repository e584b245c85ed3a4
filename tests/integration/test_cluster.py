"""A Redis Cluster (3 masters, 3 replicas, Debian's redis-server on loopback ports) and three
gunicorn servers on it as three "hosts", two workers each: delivery across hosts, a master
killed with kill -9 (its replica takes over), and a slot moved while people chat.

The clients here behave as the page does: each shows every message once, and when the server
closes it (1012 resync, 1013 unavailable) or refuses it, it connects again with since=<the
last id shown> and the welcome's epoch, and shows the welcome's history first.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.cluster import RedisClusterServers
from tests.helpers import TIMEOUT, Client, Server, stored, wait_for, worker_of

HOSTS = 3
WORKERS = "2"


def hosts(make_server, cluster: RedisClusterServers) -> list[Server]:
    env = {"REDIS_URL": cluster.url, "REDIS_CLUSTER": "1", "RATE_LIMIT": "100000", "MAX_CONNECTIONS_PER_IP": "0"}
    env["LOG_LEVEL"] = "DEBUG"  # each connect logged: which worker serves whom (worker_of)
    return [make_server(env, args=("-w", WORKERS)) for _ in range(HOSTS)]


class Follower(threading.Thread):
    """A page-like reader of one room (see the module's docstring), in a thread. `shown` is
    every message id it was shown, in order; `told` the errors and close codes it met."""

    def __init__(self, server: Server, room: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.server, self.room = server, room
        self.shown: list[int] = []
        self.told: list[str] = []
        self.problems: list[str] = []
        self.welcomed = threading.Event()  # the first welcome came: it is in the room
        self.stop = threading.Event()
        self.epoch: str | None = None
        self.start()

    def run(self) -> None:
        while not self.stop.is_set():
            query = {} if not self.shown else {"since": str(self.shown[-1]), "epoch": self.epoch or ""}
            try:
                with Client(self.server, self.room, self.name, **query) as client:
                    self.follow(client)
            except ConnectionClosed as exc:
                self.told.append(f"closed {exc.rcvd.code if exc.rcvd else None}")
            except (InvalidStatus, OSError, TimeoutError) as exc:  # refused while Redis is away
                self.told.append(f"refused {exc}")
            self.stop.wait(0.2)  # the page waits too before it connects again

    def follow(self, client: Client) -> None:
        welcome = client.expect("welcome")
        self.epoch = welcome["epoch"]
        for message in welcome["history"]:
            self.show(message)
        self.welcomed.set()
        while not self.stop.is_set():
            try:
                event = client.next(0.2)
            except TimeoutError:
                continue
            if event["type"] == "message":
                self.show(event)
            elif event["type"] == "error":
                self.told.append(event["code"])

    def show(self, message: dict[str, Any]) -> None:
        id_ = int(message["id"])
        if self.shown and id_ <= self.shown[-1]:
            self.problems.append(f"{self.name}: shown {id_} after {self.shown[-1]}")
        self.shown.append(id_)

    def until(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.shown) < count:
            assert time.monotonic() < deadline, f"{self.name}: shown {len(self.shown)} of {count}; told {self.told}"
            time.sleep(0.05)  # the thread shows them: nothing to await across threads

    def finish(self) -> None:
        self.stop.set()
        self.join(TIMEOUT)


class Sender:
    """Says numbered messages with cids and, as the page does, says again each one refused
    with `unavailable`, or not acked when its connection ends (any other error for it fails
    the test: the page would drop the message); `acked` maps cid -> id."""

    def __init__(self, server: Server, room: str, name: str) -> None:
        self.server, self.room, self.name = server, room, name
        self.key = "k-" + secrets.token_hex(8)  # its cids are its own across reconnects
        self.acked: dict[str, int] = {}

    def say(self, count: int, timeout: float = 60.0) -> None:
        """Send `count` messages, one at a time (as typed), each until it is acked."""
        deadline = time.monotonic() + timeout
        unacked = [f"{self.name}-{k}" for k in range(count)]
        while unacked:
            assert time.monotonic() < deadline, f"{self.name}: {unacked[0]} never acked"
            try:
                with Client(self.server, self.room, self.name, key=self.key) as client:
                    client.expect("welcome")
                    while unacked:
                        cid = unacked[0]
                        client.say(cid, cid=cid)
                        event = client.next(TIMEOUT)
                        while event.get("cid") != cid:  # others' messages, `degraded`
                            event = client.next(TIMEOUT)
                        if event["type"] == "message":
                            self.acked[cid] = int(event["id"])
                            unacked.pop(0)
                        else:  # the page keeps it pending and sends it again, on `unavailable` only
                            assert event["code"] == "unavailable", f"{self.name}: {event}"
                            time.sleep(0.2)
            except (ConnectionClosed, InvalidStatus, OSError, TimeoutError):
                time.sleep(0.2)


def test_every_client_on_every_host_gets_every_message_of_its_room_once_in_order(make_server, redis_cluster) -> None:
    """A room on each master; readers on every worker of every host; senders on every host."""
    servers = hosts(make_server, redis_cluster)
    rooms = [rooms[0] for rooms in redis_cluster.rooms_by_master("c-" + secrets.token_hex(3)).values()]
    readers: dict[str, list[Client]] = {r: [] for r in rooms}
    clients: list[Client] = []
    try:
        for r in rooms:
            for server in servers:
                workers: set[str] = set()
                while len(workers) < 2:  # a reader on both workers of each host
                    assert len(readers[r]) < 60, "a host's second worker took no connection"
                    reader = Client(server, r, f"reader-{len(readers[r])}")
                    readers[r].append(reader)
                    workers.add(worker_of(server, reader, reader.expect("welcome")))
        clients = [c for rs in readers.values() for c in rs]
        senders = [(r, Client(server, r, f"sender-{n}")) for r in rooms for n, server in enumerate(servers)]
        clients += [c for _, c in senders]
        for _, sender in senders:
            sender.expect("welcome")

        def send(sender: Client) -> None:
            for k in range(40):
                sender.say(f"{k}")

        threads = [threading.Thread(target=send, args=(sender,)) for _, sender in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        total = 40 * HOSTS
        for r in rooms:
            shown = [[int(reader.expect("message", timeout=10)["id"]) for _ in range(total)] for reader in readers[r]]
            kept = [int(m["id"]) for m in stored(servers[0], r)]  # all stored: each was shown
            assert len(kept) == total
            for reader, ids in zip(readers[r], shown, strict=True):
                assert ids == kept  # each once, in id order, on every worker of every host
                assert not [e for e in reader.pending if e["type"] == "message"]
    finally:
        for client in clients:
            client.__exit__()


def test_a_master_killed_fails_over_its_rooms_resume_and_nothing_acked_is_lost(make_server, make_cluster) -> None:
    """kill -9 the master of one room while people chat in it and in a room on another
    master: the replica takes over; the first room's clients are told `degraded`, then
    `resync` (1012), and resume with since; every message acked before the failover is
    stored (each batch is acked once a replica has it: WAIT) and shown once, in order. The
    other room's clients are not disturbed."""
    cluster = make_cluster()
    servers = hosts(make_server, cluster)
    by_master = cluster.rooms_by_master("f-" + secrets.token_hex(3))
    url_port = cluster.nodes[0].port
    doomed_port, calm_port = [port for port in by_master if port != url_port][:2]  # REDIS_URL's node lives
    doomed, calm = by_master[doomed_port][0], by_master[calm_port][0]
    followers = [Follower(server, r, f"{r}-{n}") for r in (doomed, calm) for n, server in enumerate(servers)]
    try:
        for follower in followers:
            assert follower.welcomed.wait(TIMEOUT)
        senders = [Sender(servers[n], r, f"{r}-s{n}") for r in (doomed, calm) for n in range(2)]
        threads = [threading.Thread(target=s.say, args=(30,), daemon=True) for s in senders]
        for thread in threads:
            thread.start()
        while sum(len(s.acked) for s in senders) < 20:  # chatting in both rooms
            time.sleep(0.05)
        acked_before = {cid: id_ for s in senders for cid, id_ in list(s.acked.items())}
        cluster.node(doomed_port).proc.kill()  # kill -9: no goodbye to anyone
        for thread in threads:
            thread.join(90)
        assert not [t for t in threads if t.is_alive()], "a sender never got all its messages acked"
        cluster.wait_ok()
        for r in (doomed, calm):
            kept = stored(servers[1], r)
            ids = [int(m["id"]) for m in kept]
            cids = {m["cid"]: int(m["id"]) for m in kept}
            acked = {cid: id_ for s in senders if s.room == r for cid, id_ in s.acked.items()}
            assert ids == sorted(set(ids)) and len(ids) == 60, f"{r}: {len(ids)} stored"
            assert cids == acked, f"{r}: what was acked is not what is stored"
            for cid, id_ in acked_before.items():
                if cid in acked:
                    assert cids[cid] == id_  # acked before the failover, kept under its id
            for follower in followers:
                if follower.room == r:
                    follower.until(60, timeout=30)
        for follower in followers:
            follower.finish()
            assert not follower.problems, follower.problems
            assert follower.shown == [int(m["id"]) for m in stored(servers[0], follower.room)]
            if follower.room == doomed:
                assert "degraded" in follower.told and "closed 1012" in follower.told, follower.told
            else:
                assert follower.told == [], f"{follower.name}, in a room of a live master: {follower.told}"
    finally:
        for follower in followers:
            follower.stop.set()


def test_a_slot_moved_while_people_chat_loses_nothing(make_server, make_cluster) -> None:
    """Resharding: the slot of a busy room moves to another master (as `redis-cli --cluster
    reshard` moves it: IMPORTING, MIGRATING, MIGRATE the keys, SETSLOT NODE). The room's
    clients resume once the worker subscribes where the slot is now; every message is stored
    once, under the id it was acked with, and shown to everyone once, in order."""
    cluster = make_cluster()
    servers = hosts(make_server, cluster)
    by_master = cluster.rooms_by_master("m-" + secrets.token_hex(3))
    source, target = list(by_master)[:2]
    r = by_master[source][0]
    followers = [Follower(server, r, f"{r}-{n}") for n, server in enumerate(servers)]
    try:
        for follower in followers:
            assert follower.welcomed.wait(TIMEOUT)
        senders = [Sender(servers[n], r, f"s{n}") for n in range(2)]
        threads = [threading.Thread(target=s.say, args=(40,), daemon=True) for s in senders]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + TIMEOUT
        while sum(len(s.acked) for s in senders) < 20:  # acked in the senders' threads
            assert time.monotonic() < deadline, "the senders got nothing acked"
            time.sleep(0.05)
        cluster.move_slot(f"chat:{{{r}}}:events", source, target)
        for thread in threads:
            thread.join(60)
        assert not [t for t in threads if t.is_alive()], "a sender never got all its messages acked"
        kept = stored(servers[0], r)
        ids = [int(m["id"]) for m in kept]
        assert ids == sorted(set(ids)) and len(ids) == 80
        assert {m["cid"]: int(m["id"]) for m in kept} == {c: i for s in senders for c, i in s.acked.items()}
        for follower in followers:
            follower.until(80, timeout=30)
            follower.finish()
            assert not follower.problems, follower.problems
            assert follower.shown == ids
            assert "closed 1012" in follower.told, follower.told  # resumed once the room moved
    finally:
        for follower in followers:
            follower.stop.set()


def test_the_whole_cluster_down_and_back_every_room_resumes_and_a_worker_waits_to_start(
    make_server, make_cluster
) -> None:
    """Every node killed: clients are told `degraded`; a server started meanwhile waits for the
    cluster (it neither fails nor stops); once the nodes are back, the clients resume, and
    both servers carry the room."""
    cluster = make_cluster()
    env = {"REDIS_URL": cluster.url, "REDIS_CLUSTER": "1", "RATE_LIMIT": "100000"}
    first = make_server(env, args=("-w", WORKERS))
    r = "d-" + secrets.token_hex(3)
    follower = Follower(first, r, "follower")
    try:
        assert follower.welcomed.wait(TIMEOUT)
        for node in cluster.nodes:
            node.proc.kill()
            node.proc.wait(5)
        late: list[Server] = []
        starting = threading.Thread(target=lambda: late.append(make_server(env)), daemon=True)
        starting.start()
        deadline = time.monotonic() + 15
        while "degraded" not in follower.told:
            assert time.monotonic() < deadline, follower.told
            time.sleep(0.05)  # told in the follower's thread
        logs = lambda: "".join(p.read_text() for p in first.log_path.parent.glob("gunicorn-*.log"))  # noqa: E731
        wait_for(lambda: "the cluster cannot be reached" in logs(), 20, "the new server's worker waiting")
        for node in cluster.nodes:
            cluster.start_node(node)
        cluster.wait_ok()
        starting.join(30)
        assert late, "the server started while the cluster was down never answered"
        deadline = time.monotonic() + 30
        while "closed 1012" not in follower.told:
            assert time.monotonic() < deadline, follower.told
            time.sleep(0.05)
        sender = Sender(late[0], r, "sender")
        sender.say(3)
        follower.until(3, timeout=15)
        follower.finish()
        assert not follower.problems and follower.shown == sorted(sender.acked.values())
        for server in (first, late[0]):
            assert "Traceback" not in server.log()  # every listener lived through it
    finally:
        follower.stop.set()
