"""Shared fixtures. Servers are real gunicorn processes on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server, running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with default settings, shared by a module's tests (each uses its own rooms)."""
    with running(tmp_path_factory.mktemp("server"), {"RATE_LIMIT": "1000"}) as server:
        yield server


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[callable]:
    """Start servers with special settings for one test; all are stopped after it."""
    servers: list[Server] = []

    def make(env: dict[str, str] | None = None, args: tuple[str, ...] = (), port: int | None = None) -> Server:
        server = Server(tmp_path, env, args, port).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
