"""Backends chosen by URL scheme (backends.py): which one each setting gives, a Redis client
shared by all three, and start-up refusals that name the variable. Nothing here connects:
redis-py connects at the first command."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatapp import backends
from chatapp.config import Config, ConfigError
from chatapp.realtime.backplane import MemoryBackplane
from chatapp.realtime.backplane.redis import RedisBackplane, channel
from chatapp.realtime.presence import HubPresence
from chatapp.realtime.presence.redis import RedisPresence
from chatapp.store.redis import RedisStore
from chatapp.store.sqlite import SQLiteStore
from tests.cluster import close

REDIS = "redis://127.0.0.1:1/0"  # never reached


def chosen(config: Config, tmp_path: Path) -> tuple[object, object, object, backends.Clients]:
    backends.check(config)
    clients = backends.Clients(config)
    store = backends.store(config, clients, str(tmp_path / "default.sqlite3"))
    return store, backends.backplane(config, clients), backends.presence(config, clients), clients


def test_without_urls_one_worker_keeps_all_in_memory_and_sqlite(tmp_path: Path) -> None:
    store, backplane, presence, _ = chosen(Config(), tmp_path)
    assert isinstance(store, SQLiteStore) and not store.publishes
    assert (tmp_path / "default.sqlite3").exists()
    assert isinstance(backplane, MemoryBackplane) and isinstance(presence, HubPresence)
    store.close()


@pytest.mark.parametrize("setting", ["database_path", "database_url"])
def test_the_sqlite_file_is_named_by_path_or_by_url(tmp_path: Path, setting: str) -> None:
    path = tmp_path / "named.sqlite3"
    value = str(path) if setting == "database_path" else backends.SQLITE_PREFIX + str(path)
    store, *_ = chosen(Config(**{setting: value}), tmp_path)
    assert isinstance(store, SQLiteStore) and path.exists()
    store.close()


def test_redis_url_gives_all_three_on_one_client_and_the_store_publishes_on_the_backplanes_channel(
    tmp_path: Path,
) -> None:
    store, backplane, presence, clients = chosen(Config(redis_url=REDIS), tmp_path)
    assert isinstance(store, RedisStore) and isinstance(backplane, RedisBackplane)
    assert isinstance(presence, RedisPresence)
    assert store.publishes and store._channel is channel
    assert store._redis is backplane._nodes.client("") is presence._redis is clients.redis(REDIS)
    assert chosen(Config(redis_url=REDIS, database_url=REDIS), tmp_path)[0].publishes


def test_redis_cluster_gives_all_three_on_one_cluster_client(redis_cluster, tmp_path: Path) -> None:
    """REDIS_CLUSTER=1: one node's URL, and the three share a client of the whole cluster
    (which asks that node for the others at once: this test needs a real cluster)."""
    import redis

    from chatapp.realtime.backplane.cluster import ClusterNodes

    store, backplane, presence, clients = chosen(Config(redis_url=redis_cluster.url, redis_cluster=True), tmp_path)
    client = clients.redis(redis_cluster.url)
    assert isinstance(client, redis.RedisCluster) and len(client.get_primaries()) == 3
    assert store._redis is presence._redis is client and store.publishes
    assert isinstance(backplane._nodes, ClusterNodes)
    close(client)


def test_a_redis_store_without_the_redis_backplane_publishes_nothing(tmp_path: Path) -> None:
    store, backplane, *_ = chosen(Config(database_url=REDIS), tmp_path)
    assert isinstance(store, RedisStore) and not store.publishes
    assert isinstance(backplane, MemoryBackplane)  # it delivers what the chat emits


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({"REDIS_URL": "http://example"}, "REDIS_URL", "redis://, rediss:// or unix://"),
        ({"REDIS_URL": "memory:"}, "REDIS_URL", "redis://, rediss:// or unix://"),
        ({"DATABASE_URL": "postgres://db/chat"}, "DATABASE_URL", "sqlite:///, redis://, rediss:// or unix://"),
        ({"DATABASE_URL": "sqlite:chat.sqlite3"}, "DATABASE_URL", "sqlite:///relative/path"),
        ({"REDIS_URL": REDIS, "DATABASE_URL": "sqlite:///chat.sqlite3"}, "DATABASE_URL", "backplane's Redis"),
    ],
)
def test_a_url_no_backend_takes_stops_start_up_naming_its_variable(env: dict, variable: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        backends.check(Config.from_env(env))
    assert str(refused.value).startswith(variable) and message in str(refused.value)
