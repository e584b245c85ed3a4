"""Which backend of each kind the app uses, chosen by the scheme of a URL, in one place (as
encode/broadcaster chooses its): the message store (chatapp/store/), and the realtime layer's
backplane and presence (chatapp/realtime/backplane/, presence/).

| kind                | its URL                                                   | schemes                       |
| ------------------- | --------------------------------------------------------- | ----------------------------- |
| store               | DATABASE_URL, else REDIS_URL, else sqlite: DATABASE_PATH  | sqlite, redis, rediss, unix   |
| backplane, presence | REDIS_URL, else memory:                                   | memory, redis, rediss, unix   |

A backend's module is imported only when its scheme is chosen. An unknown scheme stops
start-up with a ConfigError that names the variable (`check`, which gunicorn.conf.py runs in
the master too). One Redis client per URL is made (Clients) and shared by the backends on it.
With the Redis backplane the store must be in the same Redis, whose append script publishes
each message on the backplane's channel in the step that takes its id (store/redis.py): then
every worker sees a room's messages in id order, which resuming from the last id relies on.

A new backend (a Postgres store, say) is its module, and its opener in a table here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .config import Config, ConfigError
from .realtime.backplane import Backplane
from .realtime.presence import Presence
from .store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
Opener = Callable[[str, Config, "Clients"], T]  # (url, config, clients) -> the backend

REDIS_CONNECTIONS = 50  # per worker; one is the backplane listener's for good
REDIS_POOL_WAIT = 5.0  # seconds a command may wait for a connection, then Unavailable
CLUSTER_RETRY = 1.0  # seconds between a starting worker's tries to reach REDIS_URL's cluster node
SQLITE_PREFIX = "sqlite:///"  # then a path: relative, or absolute with its own slash (sqlite:////var/chat.db)


class Clients:
    """What the backends of one app share: one Redis client per URL, made when first asked for."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._redis: dict[str, Any] = {}

    def redis(self, url: str) -> Any:
        """The redis.Redis of `url`."""
        if url not in self._redis:
            self._redis[url] = _redis_client(url, self._config.redis_tls_verify, self._config.redis_cluster)
        return self._redis[url]


def store(config: Config, clients: Clients, default_path: str) -> Store:
    """The message store (SQLite at `default_path` when no variable names one)."""
    variable, url = _store_url(config, default_path)
    return _opener(STORES, variable, url)(url, config, clients)


def backplane(config: Config, clients: Clients) -> Backplane:
    """How an emit reaches every worker's Hub."""
    variable, url = _realtime_url(config)
    return _opener(BACKPLANES, variable, url)(url, config, clients)


def presence(config: Config, clients: Clients) -> Presence:
    """Who is in a room, on every worker."""
    variable, url = _realtime_url(config)
    return _opener(PRESENCES, variable, url)(url, config, clients)


def check(config: Config) -> None:
    """Raise ConfigError, naming the variable, for a URL no backend takes, or a pair that
    cannot work together."""
    for table, (variable, url) in (
        (STORES, _store_url(config, "")),
        (BACKPLANES, _realtime_url(config)),
        (PRESENCES, _realtime_url(config)),
    ):
        _opener(table, variable, url)
    if config.redis_url and config.database_url and config.database_url != config.redis_url:
        raise ConfigError(
            "DATABASE_URL must be unset (or REDIS_URL) when REDIS_URL is set: the history must be in the"
            " backplane's Redis, which publishes each message as it gives it an id"
        )


def _store_url(config: Config, default_path: str) -> tuple[str, str]:
    if config.database_url:
        return "DATABASE_URL", config.database_url
    if config.redis_url:
        return "REDIS_URL", config.redis_url
    return "DATABASE_PATH", SQLITE_PREFIX + (config.database_path or default_path)


def _realtime_url(config: Config) -> tuple[str, str]:
    return "REDIS_URL", config.redis_url or "memory:"


def _opener(table: dict[str, Opener[T]], variable: str, url: str) -> Opener[T]:
    scheme = url.partition(":")[0].lower()
    if scheme not in table:
        # REDIS_URL serves every kind: its schemes are those that every kind knows
        tables = (STORES, BACKPLANES, PRESENCES) if variable == "REDIS_URL" else (table,)
        forms = [SQLITE_PREFIX if s == "sqlite" else f"{s}://" for s in table if all(s in t for t in tables)]
        raise ConfigError(f"{variable} must start with {', '.join(forms[:-1])} or {forms[-1]}")
    if scheme == "sqlite" and not url.startswith(SQLITE_PREFIX):
        raise ConfigError(f"{variable} must be {SQLITE_PREFIX}relative/path or {SQLITE_PREFIX}/absolute/path")
    return table[scheme]


# -- the openers: (url, config, clients) -> backend; each imports its module when chosen -------
def _sqlite_store(url: str, config: Config, clients: Clients) -> Store:
    from .store.sqlite import SQLiteStore

    return SQLiteStore(url.removeprefix(SQLITE_PREFIX), config.history_limit, _idle_seconds(config))


def _redis_store(url: str, config: Config, clients: Clients) -> Store:
    from .realtime.backplane.redis import channel as backplane_channel
    from .store.redis import RedisStore

    # On the Redis backplane's own Redis (check() makes it so), the store's append script
    # publishes each new message on the room's backplane channel: never elsewhere, never twice.
    channel = backplane_channel if _realtime_url(config)[1] == url else None
    return RedisStore(clients.redis(url), config.history_limit, channel=channel, idle=_idle_seconds(config))


def _idle_seconds(config: Config) -> float:
    return config.history_idle_days * 86400


def _memory_backplane(url: str, config: Config, clients: Clients) -> Backplane:
    from .realtime.backplane import MemoryBackplane

    return MemoryBackplane()


def _redis_backplane(url: str, config: Config, clients: Clients) -> Backplane:
    from .realtime.backplane.redis import RedisBackplane

    return RedisBackplane(clients.redis(url))


def _hub_presence(url: str, config: Config, clients: Clients) -> Presence:
    from .realtime.presence import BEATS, HubPresence

    return HubPresence(config.presence_ttl / BEATS)


def _redis_presence(url: str, config: Config, clients: Clients) -> Presence:
    from .realtime.presence.redis import RedisPresence

    return RedisPresence(clients.redis(url), config.presence_ttl)


STORES: dict[str, Opener[Store]] = {
    "sqlite": _sqlite_store,
    "redis": _redis_store,
    "rediss": _redis_store,
    "unix": _redis_store,
}
BACKPLANES: dict[str, Opener[Backplane]] = {
    "memory": _memory_backplane,
    "redis": _redis_backplane,
    "rediss": _redis_backplane,
    "unix": _redis_backplane,
}
PRESENCES: dict[str, Opener[Presence]] = {
    "memory": _hub_presence,
    "redis": _redis_presence,
    "rediss": _redis_presence,
    "unix": _redis_presence,
}


def _redis_client(url: str, tls_verify: bool, cluster: bool) -> Any:
    """A client of `url`: of the one Redis, or (REDIS_CLUSTER=1) of the cluster `url` is a node of."""
    import redis

    options: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "health_check_interval": 10}
    if url.startswith("rediss://") and not tls_verify:
        options["ssl_cert_reqs"] = "none"  # REDIS_TLS_VERIFY=0: managed Redis with a self-signed chain
    # A pool that makes a greenlet wait for a free connection: redis-py's default pool refuses
    # the 101st concurrent command (MaxConnectionsError), which a connect burst reaches at once.
    pool = {"max_connections": REDIS_CONNECTIONS, "timeout": REDIS_POOL_WAIT}
    if cluster:
        return _cluster_client(url, {"connection_pool_class": redis.BlockingConnectionPool, **pool, **options})
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **pool, **options))


def _cluster_client(url: str, options: dict[str, Any]) -> Any:
    """A RedisCluster (a pool per node), which asks `url`'s node for the cluster's slots at
    once: until it answers, the worker waits here, before it serves. It must not fail: a
    worker that fails to boot stops the whole gunicorn server, while one that waits past
    gunicorn's timeout is killed and started again, the others serving on."""
    import redis

    from .redis_errors import REDIS_ERRORS

    while True:
        try:
            return redis.RedisCluster.from_url(url, **options)
        except REDIS_ERRORS as exc:
            log.warning("REDIS_URL: the cluster cannot be reached (%s); trying again in %.0f s", exc, CLUSTER_RETRY)
            time.sleep(CLUSTER_RETRY)
