"""RedisStore: history and message ids in Redis, shared by every worker on every machine.

Per room (the braces keep a room's keys in one cluster slot):
- `chat:{room}:seq`      the last id given (INCR): ids never go back, even after pruning
- `chat:{room}:messages` sorted set: score = id, member = the message's JSON, as sent
- `chat:{room}:cids`     sorted set: score = id, member = cid, pruned with the messages

One Lua script checks the cid, takes the id, stores and prunes, so two workers appending at
once cannot give one id twice or keep one cid twice.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from ..errors import unavailable_on
from ..protocol import encode
from . import Message

_unavailable = unavailable_on("the message store (Redis)", redis.RedisError)

_APPEND = """
local cid = ARGV[1]
if cid ~= '' then
    local known = redis.call('ZSCORE', KEYS[3], cid)
    if known then
        local stored = redis.call('ZRANGE', KEYS[2], known, known, 'BYSCORE')
        if stored[1] then return {0, stored[1]} end
    end
end
local id = redis.call('INCR', KEYS[1])
local body = ARGV[2] .. id .. ARGV[3]
redis.call('ZADD', KEYS[2], id, body)
if cid ~= '' then redis.call('ZADD', KEYS[3], id, cid) end
local limit = tonumber(ARGV[4])
if redis.call('ZCARD', KEYS[2]) > limit then
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(limit + 1))
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. oldest[2])
end
return {1, body}
"""

_ID_PREFIX = '{"type":"message","id":"'


def _keys(room: str) -> tuple[str, str, str]:
    return f"chat:{{{room}}}:seq", f"chat:{{{room}}}:messages", f"chat:{{{room}}}:cids"


class RedisStore:
    def __init__(self, client: redis.Redis, history_limit: int) -> None:
        self._redis = client
        self.history_limit = history_limit
        self._append = client.register_script(_APPEND)

    @_unavailable
    def append_many(self, items: list[tuple[str, Message]]) -> list[tuple[Message, bool] | Exception]:
        with self._redis.pipeline(transaction=False) as pipe:  # one round trip; each script is atomic
            for room, message in items:
                fields: dict[str, Any] = {"room": room, **message}
                # The script puts the id between these halves: {"type":"message","id":"<id>","room":...}
                suffix = '",' + encode(fields).decode()[1:]
                args = (message.get("cid") or "", _ID_PREFIX, suffix, self.history_limit)
                self._append(keys=_keys(room), args=args, client=pipe)
            # A script that fails fails alone; the others are stored (not a transaction).
            results = pipe.execute(raise_on_error=False)
        return [r if isinstance(r, Exception) else (json.loads(r[1]), bool(r[0])) for r in results]

    @_unavailable
    def recent(self, room: str, limit: int) -> list[Message]:
        if limit <= 0:
            return []  # zrange(-0, -1) would be the whole set
        return [json.loads(body) for body in self._redis.zrange(_keys(room)[1], -limit, -1)]

    @_unavailable
    def after(self, room: str, since: int, limit: int = -1) -> tuple[list[Message], bool]:
        key = _keys(room)[1]
        with self._redis.pipeline(transaction=True) as pipe:  # the check and the rows agree
            pipe.zcount(key, since, since)
            pipe.zrangebyscore(key, f"({since}", "+inf", start=0, num=limit)
            known, bodies = pipe.execute()
        return [json.loads(body) for body in bodies], known == 0

    @_unavailable
    def counts(self, rooms: list[str]) -> dict[str, int]:
        with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.zcard(_keys(room)[1])
            return {room: n for room, n in zip(rooms, pipe.execute(), strict=True) if n}
