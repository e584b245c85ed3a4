"""RedisPresence: who is in a room, across every worker, in Redis.

Each worker writes its own clients into a sorted set per room with a deadline as the score,
and its heartbeat renews them every TTL/4 s with a deadline 3/4 TTL ahead: an entry survives a
renewal up to TTL/2 late. A worker that dies stops renewing; its clients' deadlines pass
within 3/4 TTL and the next sweep (every TTL/4, by the live worker that sweeps) takes them
out, so they leave within PRESENCE_TTL of the death, each reported once (on_expired, a Lua
script sweeps) so that the app can tell the room they left.

One worker sweeps at a time: the holder of a lease (SWEEPER, a redis-py Lock that its holder
extends each beat, taken by another worker's next beat once its holder stops extending it).
So a sweep costs every room once per beat, not once per worker, and goes pipelined: a few
round trips per beat however many rooms there are. The sweep's script counts each room's
members as it goes: the holder reports the counts (on_counted). Only a steady worker holds
the lease: one whose heartbeat is not steady gives it up. A holder that dies leaves the
lease within LEASE_BEATS beats, and the next sweep still comes within PRESENCE_TTL of its
death: its members' deadlines pass 3/4 TTL after its last renewal, by when the lease has
moved on.

A stalled Redis (or a stalled worker) must not look like dead workers: during a stall no one
renews, and the first sweep after it would find every deadline passed. So a worker sweeps only
when its own heartbeat has been steady (each renewal answered within half a beat) for a whole
entry lifetime, by which time every live worker has renewed since the stall. And a renewal that
finds one of its entries gone (swept by a worker that judged wrong, or removed by hand) puts it
back and reports it (on_restored), so the app can tell the room that member is there after all.
"""

from __future__ import annotations

import json
import logging
import time
from time import monotonic

import gevent
import redis

from ...redis_errors import REDIS_ERRORS
from ...unavailable import unavailable_on
from ..hub import Hub
from ..protocol import loads
from . import BEATS, Counted, Info, Report

log = logging.getLogger(__name__)

# Each script touches one room's key, so that on a Redis Cluster it runs in the room's slot.
_SWEEP = """
local gone = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE')
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
return {redis.call('ZCARD', KEYS[1]), gone}
"""
_MEMBERS = """
return {redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1), redis.call('ZCARD', KEYS[1])}
"""
# The rooms with members, for `rooms()` and the sweep: one key, so on one node of a cluster.
# Nothing a client waits for needs it: a join lists its room at once if it can, and every
# heartbeat lists the rooms of this worker's members again.
ROOMS = "chat:presence-rooms"
SWEEPER = "chat:presence-sweeper"  # the lease: held by the worker that sweeps


def _key(room: str) -> str:
    return f"chat:{{{room}}}:presence"


_unavailable = unavailable_on("presence (Redis)", *REDIS_ERRORS)

LIFETIME = 0.75  # an entry's deadline, in PRESENCE_TTLs after its renewal: LIFETIME + 1/BEATS = 1
LEASE_BEATS = 2  # the lease's lifetime, in heartbeats, after it is taken or extended
LISTING_WAIT = 1.0  # seconds rooms() waits for this worker's listings under way (a cluster's)
SWEEP_CHUNK = 1000  # rooms per pipeline of a sweep
GIVE_UP_WAIT = 1.0  # seconds a worker's end waits to release the lease


class RedisPresence:
    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self._redis = client
        self._on_expired: Report = lambda room, info, members: None
        self._on_restored: Report = lambda room, info, members: None
        self._on_counted: Counted = lambda counts: None
        self.ttl = ttl
        self.every = ttl / BEATS  # seconds between heartbeats
        self.lifetime = ttl * LIFETIME  # seconds from a renewal to the entry's deadline
        # This worker's entries: conn id -> {room: member}. Written by connection greenlets (an
        # entry once Redis has it), read by the heartbeat greenlet; gevent switches only at
        # I/O, so no lock.
        self._local: dict[str, dict[str, str]] = {}
        self._members = client.register_script(_MEMBERS)
        # The lease's token lives here, not in a thread-local: the heartbeat greenlet alone uses it.
        self._lease = client.lock(SWEEPER, timeout=self.every * LEASE_BEATS, thread_local=False)
        self._heartbeat: gevent.Greenlet | None = None
        self._listing: set[gevent.Greenlet] = set()  # a cluster's SADDs to the rooms list, under way
        self._steady_since: float | None = None  # monotonic; None: the last renewal failed or was slow

    def attach(self, hub: Hub, on_expired: Report, on_restored: Report, on_counted: Counted) -> None:
        """`on_expired`, `on_restored` and `on_counted` are called from the heartbeat greenlet
        (Redis, not the Hub, is the truth here)."""
        self._on_expired = on_expired
        self._on_restored = on_restored
        self._on_counted = on_counted

    @_unavailable
    def add(self, room: str, conn_id: str, info: Info) -> None:
        member = json.dumps(info, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        if isinstance(self._redis, redis.RedisCluster):  # the list of rooms is on another master: not waited for
            self._redis.zadd(_key(room), {member: time.time() + self.lifetime})
            listing = gevent.spawn(self._list, room)  # after the ZADD: a sweep meanwhile keeps the room listed
            self._listing.add(listing)
            listing.link(self._listing.discard)
        else:
            with self._redis.pipeline(transaction=False) as pipe:  # one round trip
                pipe.zadd(_key(room), {member: time.time() + self.lifetime})
                pipe.sadd(ROOMS, room)
                pipe.execute()
        self._local.setdefault(conn_id, {})[room] = member  # after: a renewal meanwhile would report it restored

    def _list(self, room: str) -> None:
        try:
            self._redis.sadd(ROOMS, room)
        except REDIS_ERRORS as exc:  # the next heartbeat lists it
            log.warning("presence: %s not listed yet (%s)", room, exc)

    @_unavailable
    def remove(self, room: str, conn_id: str) -> None:
        entries = self._local.get(conn_id, {})
        member = entries.pop(room, None)  # before: a renewal meanwhile must not keep it
        if not entries:
            self._local.pop(conn_id, None)
        if member is not None:
            self._redis.zrem(_key(room), member)

    @_unavailable
    def remove_all(self, conn_id: str) -> None:
        entries = self._local.pop(conn_id, {})
        if entries:
            with self._redis.pipeline(transaction=False) as pipe:
                for room, member in entries.items():
                    pipe.zrem(_key(room), member)
                pipe.execute()

    @_unavailable
    def members(self, room: str, limit: int) -> tuple[list[Info], int]:
        # Every entry counts until a sweep takes it out (the sweep alone judges deadlines, and
        # waits after a stall, when deadlines have passed for live members too).
        members, count = self._members(keys=(_key(room),), args=(limit,))
        return [loads(m) for m in members], count

    @_unavailable
    def rooms(self) -> dict[str, int]:
        gevent.joinall(list(self._listing), timeout=LISTING_WAIT)  # what this worker listed, in
        counts = self.counts(self._listed())
        return {room: n for room, n in counts.items() if n}

    @_unavailable
    def counts(self, rooms: list[str]) -> dict[str, int]:
        return self._counts(rooms)

    def _counts(self, rooms: list[str]) -> dict[str, int]:
        with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.zcard(_key(room))
            return dict(zip(rooms, pipe.execute(), strict=True))

    def start(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = gevent.spawn(self._beat)

    def stop(self) -> None:
        """Stop the heartbeat and hand the sweeper's lease back: another worker's next beat
        sweeps, not the first after the lease lapses."""
        if self._heartbeat is not None:
            self._heartbeat.kill()
        with gevent.Timeout(GIVE_UP_WAIT, False):  # a worker's end: not held up by a Redis away
            self._give_up()

    def _give_up(self) -> None:
        """Release the lease if this worker holds it (it lapses by itself otherwise)."""
        if self._lease.local.token is not None:
            try:
                self._lease.release()
            except REDIS_ERRORS:  # lapsed already, or Redis away
                self._lease.local.token = None

    def _beat(self) -> None:
        """The heartbeat greenlet: renews this worker's entries and, when steady and holding
        the sweeper's lease, sweeps out expired ones and reports every room's count."""
        while True:
            gevent.sleep(self.every)
            try:
                if self.leased(self.renew()):
                    self._on_counted(self.sweep())
            except REDIS_ERRORS as exc:
                self._steady_since = None
                log.warning("presence: Redis unavailable (%s)", exc)
            except Exception:
                log.exception("presence: heartbeat failed")

    def renew(self) -> bool:
        """Renew this worker's entries, put back any that was taken out, and say whether the
        heartbeat has been steady long enough for this worker to judge others' entries."""
        started = monotonic()
        deadline = time.time() + self.lifetime
        entries = [
            (conn_id, room, member) for conn_id, rooms in list(self._local.items()) for room, member in rooms.items()
        ]
        with self._redis.pipeline(transaction=False) as pipe:
            for _conn_id, room, member in entries:
                pipe.zadd(_key(room), {member: deadline})
            if entries:
                pipe.sadd(ROOMS, *{room for _conn_id, room, _member in entries})
            added = pipe.execute()[: len(entries)]
        back = []
        for (conn_id, room, member), new in zip(entries, added, strict=True):
            if not new:
                continue
            if room in self._local.get(conn_id, ()):  # swept while it was here: back, and told
                back.append((room, member))
            else:  # it left while we renewed: the renewal must not keep it
                self._redis.zrem(_key(room), member)
        if back:  # rare (a stall): the counts of their rooms in one round trip
            try:
                counts = self._counts(list({room for room, _member in back}))
            except REDIS_ERRORS:  # they are back all the same, and must be told: as in a small room
                counts = {}
            for room, member in back:
                self._on_restored(room, loads(member), counts.get(room, 0))
        now = monotonic()
        if now - started > self.every / 2:  # Redis (or this worker) stalled: others could not renew either
            self._steady_since = None
        if self._steady_since is None:
            self._steady_since = now
        return now - self._steady_since >= self.lifetime

    def leased(self, steady: bool = True) -> bool:
        """Whether this worker holds the sweeper's lease (extended, or taken now). Only a
        steady worker holds it: one whose renewals are slow gives it up, for a steady one to
        take at its next beat (should none be steady, Redis stalls for all: no one sweeps)."""
        if not steady:
            self._give_up()
            return False
        if self._lease.local.token is not None:
            try:
                return bool(self._lease.reacquire())
            except redis.exceptions.LockNotOwnedError:  # it lapsed, and another worker took it
                self._lease.local.token = None
        return bool(self._lease.acquire(blocking=False))

    def _listed(self) -> list[str]:
        return sorted(raw.decode() for raw in self._redis.smembers(ROOMS))

    def sweep(self) -> dict[str, int]:
        """Take out every entry whose deadline has passed, in every room, and report each;
        the member count of every room that has members, after it."""
        now = time.time()
        rooms = self._listed()
        swept: list[list] = []
        for first in range(0, len(rooms), SWEEP_CHUNK):  # bounded pipelines, the others run between
            # EVAL as a plain command, not a registered script's EVALSHA (which redis-py's cluster
            # pipeline refuses) nor its `eval` (which it leaves unimplemented); Redis caches the
            # script by its body all the same.
            with self._redis.pipeline(transaction=False) as pipe:
                for room in rooms[first : first + SWEEP_CHUNK]:
                    pipe.execute_command("EVAL", _SWEEP, 1, _key(room), now)
                swept += pipe.execute()
            gevent.sleep(0)
        empty = [room for room, (left, _gone) in zip(rooms, swept, strict=True) if not left]
        if empty:  # out of the list; back in at once if someone joined meanwhile
            self._redis.srem(ROOMS, *empty)
            joined = [room for room, n in self._counts(empty).items() if n]
            if joined:
                self._redis.sadd(ROOMS, *joined)
        for room, (left, gone) in zip(rooms, swept, strict=True):
            for member in gone:
                self._on_expired(room, loads(member), left)
        return {room: left for room, (left, _gone) in zip(rooms, swept, strict=True) if left}
