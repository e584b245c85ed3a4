"""Shared fixtures. Servers are real gunicorn processes on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REDIS_SERVER, RedisServer, Server, require, running


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
        server.stop()


def require_redis() -> None:
    require(os.path.exists(REDIS_SERVER), f"redis-server at {REDIS_SERVER} (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by their room names."""
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


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
