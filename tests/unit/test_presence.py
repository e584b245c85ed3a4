"""Presence, one body of tests run on each: the Hub's (one worker) and Redis on a real
redis-server and on a real Redis Cluster (the session's; each test uses its own rooms),
through the realtime layer's API.
Redis's sockets are gevent's here, as in a gunicorn gevent worker."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterator

import gevent.event
import gevent.socket
import pytest
import redis
import redis.connection

from chatapp.config import Config
from chatapp.realtime import Realtime
from chatapp.realtime.presence import redis as presence_redis
from chatapp.realtime.presence.redis import RedisPresence, _key
from tests.cluster import close
from tests.unit.fakes import Listener, listener


def redis_client(request, kind: str) -> redis.Redis:
    if kind == "cluster":
        return redis.RedisCluster.from_url(request.getfixturevalue("redis_cluster").url)
    return redis.Redis.from_url(request.getfixturevalue("redis_server").url)


@pytest.fixture(params=["hub", "redis", "cluster"])
def rt(request, monkeypatch) -> Iterator[Realtime]:
    """A started Realtime (memory backplane) with this test's presence."""
    presence, client = None, None
    if request.param != "hub":
        monkeypatch.setattr(redis.connection, "socket", gevent.socket)
        client = redis_client(request, request.param)
        presence = RedisPresence(client, ttl=30.0)
    rt = Realtime(Config(), presence=presence)
    rt.start()
    yield rt
    if presence is not None and presence._heartbeat is not None:
        presence._heartbeat.kill()
    if client is not None:
        close(client)


@pytest.fixture
def room() -> str:
    return "p-" + secrets.token_hex(4)


def ours(counts: dict[str, int], room: str) -> dict[str, int]:
    """The rooms of this test (Redis holds other tests' too)."""
    return {name: n for name, n in counts.items() if name.startswith(room)}


def named(rt: Realtime, name: str, *rooms: str) -> Listener:
    member = listener(rt, name)
    member.info["name"] = name  # what the others see of it
    for joined in rooms:
        rt.join(member, joined)  # type: ignore[arg-type]
    return member


def test_members_are_listed_and_counted_as_they_join_and_leave(rt: Realtime, room: str) -> None:
    ann, bob = named(rt, "ann", room), named(rt, "bob", room, room + "-2")
    assert rt.members(room, 10) == ([ann.info, bob.info], 2)
    assert rt.members(room, 1) == ([ann.info], 2)
    assert rt.counts([room, room + "-2", room + "-none"]) == {room: 2, room + "-2": 1, room + "-none": 0}
    assert ours(rt.rooms(), room) == {room: 2, room + "-2": 1}
    rt.leave(ann, room)  # type: ignore[arg-type]
    rt.join(bob, room)  # type: ignore[arg-type]  # the Hub has taken ann out (it takes commands in order)
    assert rt.members(room, 10) == ([bob.info], 1)
    assert ours(rt.rooms(), room) == {room: 1, room + "-2": 1}


def test_a_members_info_comes_back_as_it_was_given_whatever_json_it_holds(rt: Realtime, room: str) -> None:
    """An app's `info` with what the standard library writes and orjson alone does not read
    (NaN) is listed all the same (before, it failed every listing of its room, and a sweep)."""
    odd = named(rt, "odd")
    odd.info.update(score=float("nan"), text="é\u2028", n=-(2**63))
    rt.join(odd, room)  # type: ignore[arg-type]
    (listed,), count = rt.members(room, 10)
    assert count == 1 and math.isnan(listed.pop("score"))
    assert listed == {key: value for key, value in odd.info.items() if key != "score"}


def test_a_client_that_goes_away_leaves_every_room(rt: Realtime, room: str) -> None:
    ann, bob = named(rt, "ann", room, room + "-2"), named(rt, "bob", room)
    rt._hub.unregister(ann)  # what a session does when its client is gone
    rt._presence.remove_all(ann.id)
    rt.join(bob, room)  # type: ignore[arg-type]  # the Hub is through with ann
    assert rt.members(room, 10) == ([bob.info], 1)
    assert rt.members(room + "-2", 10) == ([], 0)
    assert ours(rt.rooms(), room) == {room: 1}


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_a_dead_workers_members_are_swept_within_the_ttl(request, kind: str, room: str) -> None:
    """Redis presence: a member's deadline is at most its renewal + TTL - one beat, so a worker
    that dies right after renewing is swept by the next beat of any live worker after that
    deadline, within PRESENCE_TTL of the death (a deadline of renewal + TTL made it 4/3 TTL)."""
    client = redis_client(request, kind)
    ttl = 3.0
    presence = RedisPresence(client, ttl)
    presence.add(room, "c1", {"id": "c1", "name": "ann"})
    presence.renew()
    renewed = time.time()  # just after the renewal: its deadline is counted from before this
    ((_member, deadline),) = client.zrange(_key(room), 0, -1, withscores=True)
    assert deadline - renewed + presence.every <= ttl
    close(client)


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_one_worker_at_a_time_holds_the_sweep_and_hands_it_on(request, monkeypatch, kind: str, room: str) -> None:
    """Redis presence: only the holder of the sweeper's lease sweeps (so every room is swept
    once a beat, not once per worker); it extends the lease each beat; one that stops hands it
    back at once, and one that dies without a word loses it LEASE_BEATS beats later."""
    monkeypatch.setattr(presence_redis, "SWEEPER", f"chat:{room}:sweeper")  # this test's own lease
    client = redis_client(request, kind)
    ttl = 0.4  # beats of 0.1 s: the lease lapses 0.2 s after it is taken or extended
    first, second, third = (RedisPresence(client, ttl) for _ in range(3))
    assert first.leased() and first.leased()  # taken, then extended
    assert not second.leased() and not third.leased()
    first.stop()
    assert second.leased() and not first.leased() and not third.leased()
    taken = time.monotonic()  # second dies now, holding it
    deadline = taken + 5
    while not third.leased():  # the lapse itself is what is tested: nothing to await but time
        assert time.monotonic() < deadline, "a dead holder's lease never lapsed"
        time.sleep(0.02)
    assert time.monotonic() - taken >= ttl / presence_redis.BEATS * presence_redis.LEASE_BEATS * 0.9
    third.stop()
    close(client)


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_a_dead_lease_holders_members_are_swept_within_the_ttl(request, monkeypatch, kind: str, room: str) -> None:
    """Redis presence: the sweeper's lease holder dies just after a beat (renewed, lease
    extended). Its lease must lapse before its members' deadlines pass, so that another
    worker, beating at any phase (here the worst: just before each quarter of TTL after the
    death), takes the lease and sweeps them within PRESENCE_TTL of the death, as documented
    (a lease of a whole TTL made it 5/4 TTL)."""
    monkeypatch.setattr(presence_redis, "SWEEPER", f"chat:{room}:sweeper")  # this test's own lease
    client = redis_client(request, kind)
    ttl = 1.0  # beats of 0.25 s
    holder, other = RedisPresence(client, ttl), RedisPresence(client, ttl)
    gone: list[int] = []  # the other's beat (1 to BEATS after the death) that reported the member
    other.attach(None, lambda r, info, n: gone.append(beat), lambda r, info, n: None, lambda counts: None)  # type: ignore[arg-type]
    holder.add(room, "c1", {"id": "c1", "name": "ghost"})
    holder.renew()
    assert holder.leased()
    died = time.monotonic()  # it dies now, holding the lease, without a word
    for beat in range(1, presence_redis.BEATS + 1):
        time.sleep(max(died + beat * other.every - 0.05 - time.monotonic(), 0))
        if other.leased():
            other.sweep()
        if gone:
            break
    assert gone, f"a dead holder's member not swept within {presence_redis.BEATS} beats (PRESENCE_TTL)"
    other.stop()
    client.delete(_key(room))
    close(client)


@pytest.mark.parametrize("kind", ["hub", "redis", "cluster"])
def test_each_beat_one_worker_of_all_reports_every_rooms_count(request, monkeypatch, kind: str, room: str) -> None:
    """Presence's heartbeat: every beat, one worker of all (the one; with Redis, the steady
    holder of the sweeper's lease) reports the count of each room with members on every
    worker, so that an app tells each room once; a room that emptied is left out."""
    ttl = 2.0  # beats of 0.5 s; the lease lasts 1 s, a worker is steady after 1.5 s
    client = None
    if kind != "hub":
        monkeypatch.setattr(redis.connection, "socket", gevent.socket)
        monkeypatch.setattr(presence_redis, "SWEEPER", f"chat:{room}:sweeper")  # this test's own lease
        client = redis_client(request, kind)
    workers = [Realtime(Config(presence_ttl=ttl), presence=client and RedisPresence(client, ttl)) for _ in range(2)]
    if kind == "hub":
        workers = workers[:1]  # one worker: no one else to report
    reports: list[tuple[int, dict[str, int]]] = []
    for n, rt in enumerate(workers):
        rt.on_presence_counted(lambda counts, n=n: reports.append((n, ours(counts, room))))
    try:
        for rt in workers:
            rt.start()
        members = [named(rt, f"m{n}", room) for n, rt in enumerate(workers)]
        with gevent.Timeout(15):
            while {room: len(workers)} not in [counts for _n, counts in reports]:
                gevent.sleep(0.05)  # reported from the heartbeat: nothing to await but it
            for rt, member in zip(workers, members, strict=True):
                rt.leave(member, room)  # type: ignore[arg-type]
            left = len(reports)
            while {} not in [counts for _n, counts in reports[left:]]:
                gevent.sleep(0.05)
        assert len({n for n, _counts in reports}) == 1  # one worker reports, the other does not
    finally:
        for rt in workers:
            rt.stop()
        if client is not None:
            close(client)


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_a_member_taken_out_while_its_worker_holds_it_is_put_back_and_reported_with_the_count(
    request, monkeypatch, kind: str, room: str
) -> None:
    """A sweep by a worker that took this one for dead (a stall): the next renewal puts the
    entry back and reports it restored, with the room's count, so the room can be told."""
    monkeypatch.setattr(redis.connection, "socket", gevent.socket)
    client = redis_client(request, kind)
    presence = RedisPresence(client, ttl=30.0)
    restored: list[tuple[str, dict, int]] = []
    presence.attach(None, lambda r, info, n: None, lambda *report: restored.append(report), lambda counts: None)  # type: ignore[arg-type]
    presence.add(room, "c1", {"id": "c1", "name": "ann"})
    presence.add(room, "c2", {"id": "c2", "name": "bob"})
    (entry,) = [m for m in client.zrange(_key(room), 0, -1) if b'"c1"' in m]
    client.zrem(_key(room), entry)  # swept by another worker
    presence.renew()
    assert restored == [(room, {"id": "c1", "name": "ann"}, 2)]
    presence.renew()
    assert len(restored) == 1  # reported once
    presence.remove_all("c1")
    presence.remove_all("c2")
    close(client)


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_a_sweep_takes_out_and_reports_each_expired_member_and_counts_every_room(
    request, monkeypatch, kind: str, room: str
) -> None:
    """Redis presence's sweep, pipelined (on a cluster too, whose pipeline takes EVAL only as a
    plain command): an entry past its deadline is taken out and reported once; a room left
    empty leaves the rooms list; the others' counts come back."""
    monkeypatch.setattr(redis.connection, "socket", gevent.socket)
    client = redis_client(request, kind)
    presence = RedisPresence(client, ttl=30.0)
    expired: list[tuple[str, dict, int]] = []
    presence.attach(None, lambda *report: expired.append(report), lambda r, info, n: None, lambda counts: None)  # type: ignore[arg-type]
    presence.add(room, "c1", {"id": "c1", "name": "ann"})
    presence.add(room, "c2", {"id": "c2", "name": "bob"})
    presence.add(room + "-gone", "c3", {"id": "c3", "name": "cy"})
    for key, member in [(_key(room), "c1"), (_key(room + "-gone"), "c3")]:  # as if their worker died
        (entry,) = [m for m in client.zrange(key, 0, -1) if f'"{member}"'.encode() in m]
        client.zadd(key, {entry: time.time() - 1})
    presence.rooms()  # the cluster's listings are in
    counts = presence.sweep()
    assert ours(counts, room) == {room: 1}
    assert sorted(expired, key=str) == [
        (room, {"id": "c1", "name": "ann"}, 1),
        (room + "-gone", {"id": "c3", "name": "cy"}, 0),
    ]
    assert room + "-gone" not in ours(presence.rooms(), room)
    presence.sweep()
    assert len(expired) == 2  # reported once
    presence.remove_all("c2")
    close(client)
