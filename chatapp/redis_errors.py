"""What a call to Redis raises when the server is away, hung or moving a slot: one tuple for
every module that talks to Redis (the store, the backplane, presence). A Redis Cluster's own
errors (no node answers, the slots cannot be had) are not RedisErrors in redis-py."""

from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
