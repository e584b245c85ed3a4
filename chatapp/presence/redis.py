"""RedisPresence: who is in a room, across every worker, in Redis.

Each worker writes its own clients into a sorted set per room with a deadline as the score,
and renews the deadlines every TTL/3 s. A worker that dies stops renewing; its clients are
swept out within PRESENCE_TTL s by any live worker, which reports each one (on_expired) so
the app can tell the room they left. A Lua script sweeps, so each one is reported once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import gevent
import redis

from ..errors import unavailable_on
from . import Info

log = logging.getLogger(__name__)

_SWEEP = """
local now = ARGV[1]
local gone = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE')
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return gone
"""
ROOMS = "chat:presence-rooms"


def _key(room: str) -> str:
    return f"chat:{{{room}}}:presence"


_unavailable = unavailable_on("presence (Redis)", redis.RedisError)


class RedisPresence:
    def __init__(self, client: redis.Redis, on_expired: Callable[[str, Info], None], ttl: float) -> None:
        self._redis = client
        self._on_expired = on_expired
        self.ttl = ttl
        # This worker's entries: conn id -> {room: member}. Written by connection greenlets,
        # read by the heartbeat greenlet; gevent switches only at I/O, so no lock.
        self._local: dict[str, dict[str, str]] = {}
        self._sweep = client.register_script(_SWEEP)
        self._heartbeat: gevent.Greenlet | None = None

    @_unavailable
    def add(self, room: str, conn_id: str, info: Info) -> None:
        member = json.dumps(info, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        self._local.setdefault(conn_id, {})[room] = member
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(_key(room), {member: time.time() + self.ttl})
            pipe.sadd(ROOMS, room)
            pipe.execute()

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
        now = time.time()
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrangebyscore(_key(room), now, "+inf", start=0, num=limit)
            pipe.zcount(_key(room), now, "+inf")
            members, count = pipe.execute()
        return [json.loads(m) for m in members], count

    @_unavailable
    def rooms(self) -> dict[str, int]:
        counts = self.counts(sorted(r.decode() for r in self._redis.smembers(ROOMS)))
        return {room: n for room, n in counts.items() if n}

    @_unavailable
    def counts(self, rooms: list[str]) -> dict[str, int]:
        now = time.time()
        with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.zcount(_key(room), now, "+inf")
            return dict(zip(rooms, pipe.execute(), strict=True))

    def start(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = gevent.spawn(self._beat)

    def _beat(self) -> None:
        """The heartbeat greenlet: renews this worker's entries and sweeps out expired ones."""
        while True:
            gevent.sleep(self.ttl / 3)
            try:
                self.renew()
                self.sweep()
            except redis.RedisError as exc:
                log.warning("presence: Redis unavailable (%s)", exc)
            except Exception:
                log.exception("presence: heartbeat failed")

    def renew(self) -> None:
        deadline = time.time() + self.ttl
        with self._redis.pipeline(transaction=False) as pipe:
            for entries in list(self._local.values()):
                for room, member in entries.items():
                    pipe.zadd(_key(room), {member: deadline})
                    pipe.sadd(ROOMS, room)
            pipe.execute()

    def sweep(self) -> None:
        now = time.time()
        for raw in self._redis.smembers(ROOMS):
            room = raw.decode()
            for member in self._sweep(keys=(_key(room), ROOMS), args=(now, room)):
                self._on_expired(room, json.loads(member))
