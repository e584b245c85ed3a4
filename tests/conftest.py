"""Shared fixtures. Servers are real gunicorn processes on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.cluster import REDIS_CLI, RedisClusterServers
from tests.helpers import REDIS_SERVER, RedisServer, Server, require, running

# Property tests judge the code, not the machine: on 2 shared cores the generation of examples
# can be slow, which Hypothesis would otherwise report as a failure (HealthCheck.too_slow).
settings.register_profile("chat", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("chat")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with default settings, shared by a module's tests (each uses its own rooms)."""
    with running(tmp_path_factory.mktemp("server"), {"RATE_LIMIT": "1000"}) as server:
        yield server


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[callable]:
    """Start servers with special settings for one test; all are stopped after it."""
    servers: list[Server] = []

    def make(
        env: dict[str, str] | None = None, args: tuple[str, ...] = (), port: int | None = None, ready: int = 200
    ) -> Server:
        server = Server(tmp_path, env, args, port).start(ready)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(graceful=False)  # stopping gracefully is what the tests of SIGTERM are for


def require_redis() -> None:
    require(os.path.exists(REDIS_SERVER), f"redis-server at {REDIS_SERVER} (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by their room names."""
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """One real Redis Cluster for the session (3 masters, 3 replicas); tests keep apart by
    their room names. A test that fails a node over or moves slots starts its own (make_cluster)."""
    require_cluster()
    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["redis", "cluster"])
def redis_env(request) -> dict[str, str]:
    """A server's settings for this test's Redis: one redis-server, or a Redis Cluster."""
    if request.param == "cluster":
        return {"REDIS_URL": request.getfixturevalue("redis_cluster").url, "REDIS_CLUSTER": "1"}
    return {"REDIS_URL": request.getfixturevalue("redis_server").url}


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[callable]:
    """Start a Redis Cluster for one test (to kill its nodes, move its slots); stopped after it."""
    require_cluster()
    clusters: list[RedisClusterServers] = []

    def make() -> RedisClusterServers:
        clusters.append(RedisClusterServers(tmp_path / f"cluster-{len(clusters)}").start())
        return clusters[-1]

    yield make
    for cluster in clusters:
        cluster.stop()


def require_cluster() -> None:
    require_redis()
    require(os.path.exists(REDIS_CLI), f"redis-cli at {REDIS_CLI} (apt-get install redis-tools)")


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[callable]:
    """Start redis-servers for one test (to stop and restart them); all are stopped after it."""
    require_redis()
    servers: list[RedisServer] = []

    def make(port: int | None = None, folder: str = "redis", tls: tuple[str, ...] = ()) -> RedisServer:
        server = RedisServer(tmp_path / folder, port, tls=bool(tls)).start(*tls)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
