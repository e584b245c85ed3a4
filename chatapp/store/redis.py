"""RedisStore: history and message ids in Redis, shared by every worker on every machine.

Per room (the braces keep a room's keys in one cluster slot):
- `chat:{room}:seq`      the last id given (INCR): ids never go back, even after pruning
- `chat:{room}:messages` sorted set: score = id, member = the message's JSON, as sent
- `chat:{room}:cids`     sorted set: score = id, member = sender and cid (`sender \\n cid`),
                         pruned with the messages
- `chat:{room}:epoch`    a random name for this run of ids, made by the first read: a Redis
                         that lost its data starts ids at 1 again under a new epoch

A room's keys expire together `idle` seconds after its last message (each append renews them;
HISTORY_IDLE_DAYS): a room nobody uses any more leaves nothing behind, and one used again
starts under a new epoch.

One Lua script checks the cid, takes the id, stores, prunes and publishes the message on the
room's backplane channel (named by `channel`), so two workers appending at once cannot give one id
twice or keep one cid twice, and the channel carries each room's messages in id order (with
the id taken in one round trip and published in another, messages from two workers would
reach the channel, and the clients, out of order, and a client resuming from the last id it
was shown would skip the lower one still on its way).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import redis

from ..realtime.protocol import encode
from ..unavailable import unavailable_on
from . import History, Message, sender

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
local idle = tonumber(ARGV[6])
if idle > 0 then
    for i = 1, 4 do redis.call('EXPIRE', KEYS[i], idle) end
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], id .. '\\n' .. body) end
return {1, body}
"""

# One consistent read of a room's history (see Store.read): the epoch (made if missing), then
# the messages after `since` when it is of that epoch (and kept, or paged), else the last `limit`.
_READ = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
    epoch = ARGV[1]
    redis.call('SET', KEYS[1], epoch)
    -- it expires with the ids it names: the seq's expiry if it has one, else the idle time
    local left, idle = redis.call('PTTL', KEYS[2]), tonumber(ARGV[6])
    if left > 0 then redis.call('PEXPIRE', KEYS[1], left) elseif idle > 0 then redis.call('EXPIRE', KEYS[1], idle) end
end
local since, limit, page = tonumber(ARGV[2]), tonumber(ARGV[4]), ARGV[5]
local reset = 0
if since then
    local last = tonumber(redis.call('GET', KEYS[2]) or '0')
    if (ARGV[3] ~= '' and ARGV[3] ~= epoch) or since > last then
        reset = 1
    else
        local known = redis.call('ZCOUNT', KEYS[3], since, since) > 0
        if known or page ~= '' then
            local count = page ~= '' and page or -1
            local after = redis.call('ZRANGE', KEYS[3], '(' .. since, '+inf', 'BYSCORE', 'LIMIT', 0, count)
            return {epoch, known and 0 or 1, 0, after}
        end
    end
end
local bodies = {}
if limit > 0 then bodies = redis.call('ZRANGE', KEYS[3], -limit, -1) end
return {epoch, since and 1 or 0, reset, bodies}
"""

_ID_PREFIX = '{"type":"message","id":"'


def _keys(room: str) -> tuple[str, str, str]:
    return f"chat:{{{room}}}:seq", f"chat:{{{room}}}:messages", f"chat:{{{room}}}:cids"


def _epoch_key(room: str) -> str:
    return f"chat:{{{room}}}:epoch"


class RedisStore:
    def __init__(
        self, client: redis.Redis, history_limit: int, channel: Callable[[str], str] | None = None, idle: float = 0
    ) -> None:
        """`channel(room)`: publish each new message there, as `id \\n message` (the Redis
        backplane's format), in the script that stores it. `idle`: seconds after its last
        message that a room's history expires (0: never)."""
        self._redis = client
        self.history_limit = history_limit
        self._idle = max(int(idle), 1) if idle else 0
        self._channel = channel
        self.publishes = channel is not None
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)

    @_unavailable
    def append_many(self, items: list[tuple[str, Message]]) -> list[tuple[Message, bool] | Exception]:
        with self._redis.pipeline(transaction=False) as pipe:  # one round trip; each script is atomic
            for room, message in items:
                fields: dict[str, Any] = {"room": room, **message}
                # The script puts the id between these halves: {"type":"message","id":"<id>","room":...}
                suffix = '",' + encode(fields).decode()[1:]
                channel = self._channel(room) if self._channel else ""
                cid = message.get("cid")
                scoped = f"{sender(message)}\n{cid}" if cid else ""  # a name holds no newline
                args = (scoped, _ID_PREFIX, suffix, self.history_limit, channel, self._idle)
                self._append(keys=(*_keys(room), _epoch_key(room)), args=args, client=pipe)
            # A script that fails fails alone; the others are stored (not a transaction).
            results = pipe.execute(raise_on_error=False)
        return [r if isinstance(r, Exception) else (json.loads(r[1]), bool(r[0])) for r in results]

    @_unavailable
    def read(self, room: str, since: int | None, epoch: str | None, limit: int, page: int | None = None) -> History:
        seq, messages, _cids = _keys(room)
        args = (secrets.token_hex(6), "" if since is None else since, epoch or "", limit, "" if page is None else page)
        args += (self._idle,)
        epoch, truncated, reset, bodies = self._read(keys=(_epoch_key(room), seq, messages), args=args)
        return History([json.loads(body) for body in bodies], epoch.decode(), bool(truncated), bool(reset))

    @_unavailable
    def counts(self, rooms: list[str]) -> dict[str, int]:
        with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.zcard(_keys(room)[1])
            return {room: n for room, n in zip(rooms, pipe.execute(), strict=True) if n}
