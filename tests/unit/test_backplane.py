"""The backplanes, one body of tests run on each: memory (one worker) and Redis on a real
redis-server (the session's; each test uses its own rooms). Redis's sockets are gevent's here,
as in a gunicorn gevent worker, so that the listener greenlet waits without blocking the test."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
import gevent.event
import gevent.socket
import pytest
import redis
import redis.connection
from gevent.queue import Queue

from chatapp.realtime.backplane import Backplane, MemoryBackplane
from chatapp.realtime.backplane import redis as redis_backplane
from chatapp.realtime.backplane.redis import RedisBackplane, channel
from tests.cluster import close


class Worker:
    """What a Realtime gives its backplane: a `deliver` (its Hub's publish), an `on_change`, and
    `in_use` (the rooms it has clients in: here, those it subscribed and has not left)."""

    def __init__(self, backplane: Backplane, client: redis.Redis | None = None) -> None:
        self.backplane = backplane
        self.client = client  # the backplane's Redis (or cluster) client
        self.heard: Queue = Queue()
        self.changes: list[tuple[frozenset[str], bool]] = []  # (rooms, back)
        self.rooms: set[str] = set()
        self.timeline: list[tuple] = []  # ("event", room, seq) and ("change", rooms, back), as they came
        backplane.attach(self.deliver, self.on_change, self.rooms.__contains__)

    def deliver(self, room: str, event: bytes, seq: int | None) -> None:
        self.heard.put((room, event, seq))
        self.timeline.append(("event", room, seq))

    def join(self, *rooms: str) -> None:
        for room in rooms:
            self.backplane.subscribe(room)
            self.rooms.add(room)

    def on_change(self, rooms: frozenset[str], back: bool) -> None:
        self.changes.append((rooms, back))
        self.timeline.append(("change", rooms, back))

    def told(self, room: str, back: bool) -> bool:
        """Whether `room` was reported lost (back=False) or back (back=True)."""
        return any(room in rooms and was_back == back for rooms, was_back in self.changes)

    def publish_raw(self, room: str, payload: bytes) -> None:
        """What another program could put on the room's channel."""
        assert self.client is not None
        if isinstance(self.client, redis.RedisCluster):
            self.client.spublish(channel(room), payload)
        else:
            self.client.publish(channel(room), payload)

    def kill_subscriptions(self) -> int:
        """Close every subscription connection from the Redis side (a proxy's or a failover's way)."""
        assert self.client is not None
        if isinstance(self.client, redis.RedisCluster):
            nodes = [self.client.get_redis_connection(node) for node in self.client.get_primaries()]
        else:
            nodes = [self.client]
        return sum(node.client_kill_filter(_type="pubsub") for node in nodes)

    def next(self, room: str) -> tuple[bytes, int | None]:
        """The next event delivered for `room` (others' rooms are passed over)."""
        while True:
            heard_room, event, seq = self.heard.get(timeout=5)
            if heard_room == room:
                return event, seq


@contextmanager
def workers(kind: str, request, monkeypatch, url: str = "") -> Iterator[Callable[[], Worker]]:
    """start(): a started backplane of `kind` (memory, redis, cluster), as one worker's; on the
    session's Redis (or cluster), or the one at `url`."""
    clients: list[redis.Redis] = []
    started: list[Backplane] = []
    if kind != "memory":
        monkeypatch.setattr(redis.connection, "socket", gevent.socket)
        url = url or request.getfixturevalue("redis_cluster" if kind == "cluster" else "redis_server").url

    def start() -> Worker:
        if kind == "memory":
            backplane: Backplane = MemoryBackplane()
        else:
            client = redis.RedisCluster.from_url(url) if kind == "cluster" else redis.Redis.from_url(url)
            clients.append(client)
            backplane = RedisBackplane(client)
        worker = Worker(backplane, clients[-1] if clients else None)
        backplane.start()
        started.append(backplane)
        with gevent.Timeout(5):
            while not backplane.healthy:  # the connection confirmed: there is no event to await
                gevent.sleep(0.01)
        return worker

    yield start
    for backplane in started:
        if isinstance(backplane, RedisBackplane):
            backplane.stop()
    for client in clients:
        close(client)


@pytest.fixture(params=["memory", "redis", "cluster"])
def start_worker(request, monkeypatch) -> Iterator[Callable[[], Worker]]:
    """start_worker(): a started backplane on this test's backend, as one worker's."""
    with workers(request.param, request, monkeypatch) as start:
        yield start


@pytest.fixture(params=["redis", "cluster"])
def start_redis_worker(request, monkeypatch) -> Iterator[Callable[[], Worker]]:
    """The same, Redis only (one, and a cluster): for what only a backplane of several workers does."""
    with workers(request.param, request, monkeypatch) as start:
        yield start


@pytest.fixture
def room() -> str:
    return "b-" + secrets.token_hex(4)


def test_every_publish_comes_back_once_with_its_room_and_seq(start_worker, room: str) -> None:
    worker = start_worker()
    worker.join(room, room + "-sync")
    worker.backplane.publish(room, b'{"type":"message","n":1}', 7)
    worker.backplane.publish(room, b'{"type":"join"}')
    assert worker.next(room) == (b'{"type":"message","n":1}', 7)
    assert worker.next(room) == (b'{"type":"join"}', None)
    worker.backplane.publish(room + "-sync", b"{}")
    worker.next(room + "-sync")
    assert worker.heard.empty()


def test_a_publishers_events_arrive_in_the_order_it_published_them(start_worker, room: str) -> None:
    worker = start_worker()
    worker.join(room, room + "-b")
    for n in range(50):
        worker.backplane.publish(room if n % 3 else room + "-b", b"%d" % n, n)
    assert [worker.next(room) for _ in range(33)] == [(b"%d" % n, n) for n in range(50) if n % 3]


def test_a_started_backplane_is_healthy_and_has_reported_nothing(start_worker) -> None:
    worker = start_worker()
    assert worker.backplane.healthy and worker.changes == []


def test_redis_every_worker_hears_every_publish_and_a_stranger_on_the_channel_is_ignored(
    start_redis_worker, room: str
) -> None:
    one, two, stranger = start_redis_worker(), start_redis_worker(), start_redis_worker()
    one.join(room)
    two.join(room)
    stranger.publish_raw(room, b"not ours")
    one.backplane.publish(room, b"from one", 1)
    two.backplane.publish(room, b"from two", 2)
    for worker in (one, two):
        assert [worker.next(room), worker.next(room)] == [(b"from one", 1), (b"from two", 2)]


def test_redis_a_worker_hears_only_the_rooms_it_has_clients_in_and_lets_go_of_them(
    start_redis_worker, monkeypatch, room: str
) -> None:
    """A channel per room: what is published to a room this worker has nobody in never reaches
    it; a room it had clients in stays subscribed LINGER seconds after the last one left."""
    monkeypatch.setattr(redis_backplane, "LINGER", 0.5)
    listener, publisher = start_redis_worker(), start_redis_worker()
    listener.join(room)
    assert listener.backplane.subscriptions == 1
    publisher.backplane.publish(room + "-elsewhere", b"not for it")
    publisher.backplane.publish(room, b"for it")
    assert listener.heard.get(timeout=5) == (room, b"for it", None)  # and nothing before it
    listener.rooms.discard(room)  # its last client left
    with gevent.Timeout(5):
        while listener.backplane.subscriptions:  # the linger passing: no event says so
            gevent.sleep(0.05)
    publisher.backplane.publish(room, b"after it let go")
    listener.join(room + "-sync")
    publisher.backplane.publish(room + "-sync", b"sync")
    assert listener.heard.get(timeout=5) == (room + "-sync", b"sync", None)  # nothing of the room it left


def test_redis_subscriptions_asked_for_together_go_as_one_subscribe(request, monkeypatch, room: str) -> None:
    """A restart that rejoins many rooms must not take a round trip per room (on a cluster, the
    SSUBSCRIBEs of each slot are written together, and so are not counted here)."""
    with workers("redis", request, monkeypatch) as start:
        worker = start()
        calls = lambda: worker.client.info("commandstats")["cmdstat_subscribe"]["calls"]  # noqa: E731
        before = calls()
        joiners = [gevent.spawn(worker.join, f"{room}-{n}") for n in range(500)]
        gevent.joinall(joiners, timeout=10, raise_error=True)
        assert worker.backplane.subscriptions == 500
        # Not one per room: one, or a few where the listener's ticks fall among the joins (gevent
        # lets the loop run between callbacks after its switch interval, on a loaded machine too)
        # or another test's worker on this shared Redis subscribes meanwhile.
        assert calls() - before <= 10


def test_redis_a_subscription_connection_killed_is_a_loss_even_when_redis_py_reconnects(
    start_redis_worker, room: str
) -> None:
    """The subscription's connection is closed from the Redis side (CLIENT KILL, as a proxy or a
    failover may): events sent meanwhile are gone, so the listener must report a loss (and the
    clients resume), even where redis-py connects again by itself."""
    worker = start_redis_worker()
    worker.join(room)
    assert worker.kill_subscriptions() >= 1
    with gevent.Timeout(5):
        while not worker.told(room, back=False):  # reported from the listener: nothing to await
            gevent.sleep(0.01)
        while not worker.told(room, back=True):
            gevent.sleep(0.01)


def test_cluster_a_busy_rooms_slot_moved_is_lost_then_back_and_nothing_is_delivered_between(
    request, monkeypatch, make_cluster, room: str
) -> None:
    """A resharding moves the slot of a room that is being published to without pause: the
    room is reported lost when its master drops the subscription, and back once it is
    subscribed where the slot is now. Between the two, no event of it is delivered: one
    published after those missed meanwhile would carry its clients' `since` past them."""
    cluster = make_cluster()
    with workers("cluster", request, monkeypatch, cluster.url) as start:
        worker = start()
        by_master = cluster.rooms_by_master(room)
        source, target = list(by_master)[:2]
        busy = by_master[source][0]
        worker.join(busy)
        publisher = redis.RedisCluster.from_url(cluster.url)
        stop = gevent.event.Event()

        def flood() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                publisher.spublish(channel(busy), b"%d\nx" % n)

        flooding = gevent.spawn(flood)
        try:
            worker.next(busy)
            cluster.move_slot(channel(busy), source, target)
            with gevent.Timeout(10):
                while not worker.told(busy, back=True):  # reported from the listener: nothing to await
                    gevent.sleep(0.01)
                after = len(worker.timeline)
                while not any(entry[:2] == ("event", busy) for entry in worker.timeline[after:]):
                    gevent.sleep(0.01)
        finally:
            stop.set()
            flooding.join(5)
            close(publisher)
    changes = [n for n, entry in enumerate(worker.timeline) if entry[0] == "change" and busy in entry[1]]
    assert [worker.timeline[n][2] for n in changes] == [False, True]
    lost, back = changes
    assert not [entry for entry in worker.timeline[lost:back] if entry[:2] == ("event", busy)]
    seqs = [entry[2] for entry in worker.timeline if entry[:2] == ("event", busy)]
    assert seqs == sorted(set(seqs))


def test_redis_a_lost_rooms_events_are_dropped_until_it_is_reported_back(request, monkeypatch, room: str) -> None:
    """Between a room's loss and its report back, events heard for it are not delivered (its
    clients resume from the store once it is back: one shown an event past a missed one would
    resume past that one); after the report, they are. Another room on the same connection,
    heard after the dropped event, shows that the listener got that far."""
    with workers("redis", request, monkeypatch) as start:
        worker = start()
        marker = room + "-marker"
        worker.join(room, marker)
        worker.backplane._report_lost([room])
        worker.publish_raw(room, b"1\ndropped")
        worker.publish_raw(marker, b"2\nmarker")  # one connection, one order: heard after it
        assert worker.next(marker) == (b"marker", 2)
        worker.backplane._report_back({room})
        worker.publish_raw(room, b"3\ndelivered")
        assert worker.next(room) == (b"delivered", 3)
        assert [entry[2] for entry in worker.timeline if entry[:2] == ("event", room)] == [3]
        assert worker.changes == [(frozenset({room}), False), (frozenset({room}), True)]
