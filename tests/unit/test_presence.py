"""Presence on Redis (a real redis-server): the timing it promises."""

from __future__ import annotations

import secrets
import time

import redis

from chatapp.presence.redis import RedisPresence, _key


def test_a_dead_workers_members_are_swept_within_the_ttl(redis_server) -> None:
    """A member's deadline is at most its renewal + TTL - one beat: a worker that dies right
    after renewing is swept by the next beat of any live worker after that deadline, which
    comes within PRESENCE_TTL of the death (a deadline of renewal + TTL made it up to 4/3 TTL)."""
    client = redis.Redis.from_url(redis_server.url)
    ttl, room = 3.0, "p-" + secrets.token_hex(4)
    presence = RedisPresence(client, lambda room, info: None, ttl)
    presence.add(room, "c1", {"id": "c1", "name": "ann"})
    presence.renew()
    renewed = time.time()  # just after the renewal: its deadline is counted from before this
    ((_member, deadline),) = client.zrange(_key(room), 0, -1, withscores=True)
    assert deadline - renewed + presence.every <= ttl
    client.close()
