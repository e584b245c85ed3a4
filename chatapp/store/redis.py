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

One Lua script takes a batch of one room's messages and, for each, checks the cid, takes the
id, stores and publishes it on the room's backplane channel (named by `channel`), then
prunes: so two workers appending at once cannot give one id twice or keep one cid twice, and
the channel carries each room's messages in id order (with the id taken in one round trip
and published in another, messages from two workers would reach the channel, and the
clients, out of order, and a client resuming from the last id it was shown would skip the
lower one still on its way). A batch of many rooms is one round trip: a pipeline of one
script per room.

On a Redis Cluster (REDIS_CLUSTER=1) the channel is a sharded one (SPUBLISH) and, being in
the room's slot, is one of the script's keys. redis-py refuses scripts in a cluster pipeline,
so a batch is a plain pipeline per master, sent to all at once; a room whose slot moved
meanwhile (MOVED, ASK, a failover) is sent again through the cluster client, which follows it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from time import monotonic
from typing import Any

import gevent
import redis
from redis.exceptions import RedisClusterException

from ..realtime.protocol import encode, loads
from ..redis_errors import REDIS_ERRORS
from ..unavailable import Unavailable, unavailable_on
from . import Counted, History, Message, sender, within

log = logging.getLogger(__name__)
_unavailable = unavailable_on("the message store (Redis)", *REDIS_ERRORS)
# What says a Redis (or one master) is away, or a slot is on the move, rather than refusing the
# message: each becomes Unavailable for the messages of its room, which the page sends again.
_AWAY = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    RedisClusterException,
)

# A batch of one room's messages (KEYS: seq, messages, cids, epoch, and the channel when it
# publishes; ARGV: history limit, idle seconds, PUBLISH or SPUBLISH or '', the body's prefix,
# then a (scoped cid, body suffix) pair per message). Returns a (new, body) pair per message.
_APPEND = """
local limit, idle, publish, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local results = {}
for i = 5, #ARGV, 2 do
    local cid, suffix, stored = ARGV[i], ARGV[i + 1], nil
    if cid ~= '' then
        local known = redis.call('ZSCORE', KEYS[3], cid)
        if known then stored = redis.call('ZRANGE', KEYS[2], known, known, 'BYSCORE')[1] end
    end
    if stored then
        results[#results + 1] = 0
        results[#results + 1] = stored
    else
        local id = redis.call('INCR', KEYS[1])
        local body = prefix .. id .. suffix
        redis.call('ZADD', KEYS[2], id, body)
        if cid ~= '' then redis.call('ZADD', KEYS[3], id, cid) end
        if publish ~= '' then redis.call(publish, KEYS[5], id .. '\\n' .. body) end
        results[#results + 1] = 1
        results[#results + 1] = body
    end
end
if redis.call('ZCARD', KEYS[2]) > limit then
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(limit + 1))
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. oldest[2])
end
if idle > 0 then
    for i = 1, 4 do redis.call('EXPIRE', KEYS[i], idle) end
end
return results
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


# On a cluster, a master answers a batch once one replica has it too (WAIT), so that a failover
# loses no message a sender was told is stored. After REPLICA_WAIT_MS without a replica's word
# it answers anyway (the batch is at risk until the replica catches up), and is not waited for
# during UNREPLICATED_FOR: a master without a replica costs one such wait a minute, not one a batch.
REPLICA_WAIT_MS = 100
UNREPLICATED_FOR = 60.0  # seconds a master whose replica did not answer in time is not waited for


Appended = list[tuple[Message, bool]]  # a room's batch: each message as stored, and whether it is new


def _told(outcome: Appended | Exception) -> Appended | Exception:
    """What the chat is told of a room's batch: an outage is Unavailable (sent again later)."""
    if isinstance(outcome, _AWAY):
        return Unavailable("the message store (Redis) cannot be reached now; try again")
    return outcome


def _appended(reply: list[bytes]) -> Appended:
    """The append script's (new, body) pairs."""
    return [(loads(reply[n + 1]), bool(reply[n])) for n in range(0, len(reply), 2)]


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
        self._cluster = isinstance(client, redis.RedisCluster)
        self.publishes = channel is not None
        self._unreplicated: dict[str, float] = {}  # master -> until when (monotonic) it is not waited for
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)

    @_unavailable
    def append_many(self, items: list[tuple[str, Message]]) -> list[tuple[Message, bool] | Exception]:
        rooms: dict[str, list[int]] = {}  # room -> the indexes of its items, in order
        for index, (room, _message) in enumerate(items):
            rooms.setdefault(room, []).append(index)
        calls = [self._append_call(room, [items[i][1] for i in indexes]) for room, indexes in rooms.items()]
        results: list[tuple[Message, bool] | Exception] = [Exception()] * len(items)
        for indexes, outcome in zip(rooms.values(), self._run(calls), strict=True):
            for n, index in enumerate(indexes):
                results[index] = outcome if isinstance(outcome, Exception) else outcome[n]
        return results

    def _append_call(self, room: str, messages: list[Message]) -> tuple[tuple[str, ...], list[Any]]:
        """The append script's keys and arguments for a batch of `room`'s messages."""
        keys = (*_keys(room), _epoch_key(room))
        args: list[Any] = [self.history_limit, self._idle, "", _ID_PREFIX]
        if self._channel:
            keys += (self._channel(room),)
            args[2] = "SPUBLISH" if self._cluster else "PUBLISH"
        for message in messages:
            fields: dict[str, Any] = {"room": room, **message}
            cid = message.get("cid")
            scoped = f"{sender(message)}\n{cid}" if cid else ""  # a name holds no newline
            # The script puts the id between the prefix and the rest: {"type":"message","id":"<id>","room":...}
            args += (scoped, '",' + encode(fields).decode()[1:])
        return keys, args

    def _run(self, calls: list[tuple[tuple[str, ...], list[Any]]]) -> list[Appended | Exception]:
        """Run the append script once per room; one round trip per node. A room's batch that
        fails fails alone (the others are stored): Unavailable where its Redis or master is away."""
        if not self._cluster:
            return [_told(outcome) for outcome in self._pipelined(self._redis, calls)]
        # redis-py refuses scripts in a cluster pipeline: a plain pipeline per master, all at once
        by_node: dict[str, list[int]] = {}
        for index, (keys, _args) in enumerate(calls):
            by_node.setdefault(self._redis.get_node_from_key(keys[0]).name, []).append(index)
        outcomes: list[Appended | Exception] = [Exception()] * len(calls)

        def node(name: str, indexes: list[int]) -> None:
            wait = monotonic() >= self._unreplicated.get(name, 0.0)
            try:
                client = self._redis.get_redis_connection(self._redis.get_node(node_name=name))
                replies = self._pipelined(client, [calls[i] for i in indexes], wait)
            except REDIS_ERRORS as exc:  # the master is away: a failover?
                replies, wait = [exc] * len(indexes), False
            if wait and not replies.pop():  # no replica has it in time: at risk, and not waited for a while
                self._unreplicated[name] = monotonic() + UNREPLICATED_FOR
                log.warning(
                    "store: no replica of %s confirmed a batch in %d ms: lost if it fails now", name, REPLICA_WAIT_MS
                )
            for index, outcome in zip(indexes, replies, strict=True):
                # The cluster client follows a slot that moved (a resharding, a failover). After
                # a redirect the script did not run; after a lost connection it may have, so
                # only a batch whose every message has a cid (stored once, however often sent)
                # is sent again.
                moved = isinstance(outcome, redis.exceptions.AskError | redis.exceptions.TryAgainError)
                if moved or (isinstance(outcome, _AWAY) and all(calls[index][1][4::2])):
                    outcome = self._one(calls[index])
                outcomes[index] = _told(outcome)

        gevent.joinall([gevent.spawn(node, name, indexes) for name, indexes in by_node.items()], raise_error=True)
        return outcomes

    def _pipelined(self, client: Any, calls: list[tuple[tuple[str, ...], list[Any]]], wait: bool = False) -> list[Any]:
        """The calls in one round trip to `client` (a Redis, or one node of a cluster); with
        `wait`, answered once a replica has them too (or REPLICA_WAIT_MS has passed), and the
        count of replicas that have them last."""
        with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                self._append(keys=keys, args=args, client=pipe)
            if wait:
                pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
            replies = pipe.execute(raise_on_error=False)
        appended = [reply if isinstance(reply, Exception) else _appended(reply) for reply in replies[: len(calls)]]
        return appended + replies[len(calls) :]

    def _one(self, call: tuple[tuple[str, ...], list[Any]]) -> Appended | Exception:
        """One call through the cluster client, which follows a moved slot (answered without
        waiting for a replica: a rare case, at risk in a failover like an unreplicated batch)."""
        try:
            return _appended(self._append(keys=call[0], args=call[1]))
        except REDIS_ERRORS as exc:
            return exc

    @_unavailable
    def read(self, room: str, since: int | None, epoch: str | None, limit: int, page: int | None = None) -> History:
        seq, messages, _cids = _keys(room)
        args = (secrets.token_hex(6), "" if since is None else since, epoch or "", limit, "" if page is None else page)
        args += (self._idle,)
        epoch, truncated, reset, bodies = self._read(keys=(_epoch_key(room), seq, messages), args=args)
        if since is not None and not reset and page is not None:  # a page after `since`: the first that fit
            found, more = within(map(loads, bodies))
        else:  # the last ones, or all after `since` (catching up): the newest that fit
            found, more = within(map(loads, reversed(bodies)))
            found.reverse()
        return History(found, epoch.decode(), bool(truncated), bool(reset), more)

    @_unavailable
    def counts(self, rooms: list[str]) -> dict[str, Counted]:
        with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                seq, messages, _cids = _keys(room)
                pipe.zcard(messages)
                pipe.get(seq)
            replies = pipe.execute()
        return {
            room: Counted(kept, int(last or 0))
            for room, kept, last in zip(rooms, replies[::2], replies[1::2], strict=True)
            if kept
        }
