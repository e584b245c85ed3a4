"""The backplanes, one body of tests run on each: memory (one worker) and Redis on a real
redis-server (the session's; each test uses its own rooms). Redis's sockets are gevent's here,
as in a gunicorn gevent worker, so that the listener greenlet waits without blocking the test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest
import redis
import redis.connection
from gevent.queue import Queue

from chatapp.realtime.backplane import Backplane, MemoryBackplane
from chatapp.realtime.backplane.redis import CHANNEL, RedisBackplane


class Worker:
    """What a Realtime gives its backplane: a `deliver` (its Hub's publish) and an `on_change`."""

    def __init__(self, backplane: Backplane) -> None:
        self.backplane = backplane
        self.heard: Queue = Queue()
        self.changes: list[tuple[bool, bool]] = []
        backplane.attach(lambda room, event, seq: self.heard.put((room, event, seq)), self.on_change)

    def on_change(self, healthy: bool, recovered: bool) -> None:
        self.changes.append((healthy, recovered))

    def next(self, room: str) -> tuple[bytes, int | None]:
        """The next event delivered for `room` (others' rooms are passed over)."""
        while True:
            heard_room, event, seq = self.heard.get(timeout=5)
            if heard_room == room:
                return event, seq


@pytest.fixture(params=["memory", "redis"])
def start_worker(request, monkeypatch) -> Iterator:
    """start_worker(): a started backplane on this test's backend, as one worker's."""
    clients: list[redis.Redis] = []
    started: list[Backplane] = []
    if request.param == "redis":
        monkeypatch.setattr(redis.connection, "socket", gevent.socket)
        url = request.getfixturevalue("redis_server").url

    def start() -> Worker:
        if request.param == "memory":
            backplane: Backplane = MemoryBackplane()
        else:
            clients.append(redis.Redis.from_url(url))
            backplane = RedisBackplane(clients[-1])
        worker = Worker(backplane)
        backplane.start()
        started.append(backplane)
        with gevent.Timeout(5):
            while not backplane.healthy:  # the subscription confirmed: there is no event to await
                gevent.sleep(0.01)
        return worker

    yield start
    for backplane in started:
        if isinstance(backplane, RedisBackplane) and backplane._listener is not None:
            backplane._listener.kill()
    for client in clients:
        client.close()


@pytest.fixture
def room() -> str:
    return "b-" + secrets.token_hex(4)


def test_every_publish_comes_back_once_with_its_room_and_seq(start_worker, room: str) -> None:
    worker = start_worker()
    worker.backplane.publish(room, b'{"type":"message","n":1}', 7)
    worker.backplane.publish(room, b'{"type":"join"}')
    assert worker.next(room) == (b'{"type":"message","n":1}', 7)
    assert worker.next(room) == (b'{"type":"join"}', None)
    worker.backplane.publish(room + "-sync", b"{}")
    worker.next(room + "-sync")
    assert worker.heard.empty()


def test_a_publishers_events_arrive_in_the_order_it_published_them(start_worker, room: str) -> None:
    worker = start_worker()
    for n in range(50):
        worker.backplane.publish(room if n % 3 else room + "-b", b"%d" % n, n)
    assert [worker.next(room) for _ in range(33)] == [(b"%d" % n, n) for n in range(50) if n % 3]


def test_a_started_backplane_is_healthy_and_has_reported_nothing(start_worker) -> None:
    worker = start_worker()
    assert worker.backplane.healthy and worker.changes == []


def test_redis_every_worker_hears_every_publish_and_a_stranger_on_the_channel_is_ignored(
    redis_server, monkeypatch, room: str
) -> None:
    monkeypatch.setattr(redis.connection, "socket", gevent.socket)
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(3)]
    one, two = Worker(RedisBackplane(clients[0])), Worker(RedisBackplane(clients[1]))
    try:
        for worker in (one, two):
            worker.backplane.start()
        with gevent.Timeout(5):
            while not (one.backplane.healthy and two.backplane.healthy):
                gevent.sleep(0.01)
        clients[2].publish(CHANNEL, b"not ours")
        one.backplane.publish(room, b"from one", 1)
        two.backplane.publish(room, b"from two", 2)
        for worker in (one, two):
            assert [worker.next(room), worker.next(room)] == [(b"from one", 1), (b"from two", 2)]
    finally:
        for worker in (one, two):
            worker.backplane._listener.kill()  # type: ignore[attr-defined]
        for client in clients:
            client.close()
