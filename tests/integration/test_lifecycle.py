"""Start-up checks and graceful shutdown of the real gunicorn process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, Client, Server, free_port, wait_for


def gunicorn(tmp_path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run gunicorn expecting it to refuse to start; return what it did."""
    server = Server(tmp_path, env)
    command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", f"127.0.0.1:{free_port()}", *args, "wsgi:app"]
    return subprocess.run(command, cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=30)


def test_sigterm_tells_clients_to_reconnect_and_exits_in_time(make_server, tmp_path) -> None:
    server = make_server()
    assert len(list(tmp_path.glob("chatapp-metrics-*"))) == 1  # where the workers keep their metrics
    with Client(server, "lobby", "a") as a, Client(server, "other", "b") as b:
        a.expect("welcome")
        b.expect("welcome")
        a.say("before the restart")
        a.expect("message")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        for client in (a, b):
            code, reason, events = client.closed(timeout=10)
            assert code == 1001
            assert events[-1]["type"] == "error" and events[-1]["code"] == "shutting_down"
        assert server.wait(timeout=15) == 0
        assert time.monotonic() - started < 10  # well within the graceful timeout of 20 s
    log = server.log()
    assert "Worker exiting" in log
    assert "Traceback" not in log and "Exception ignored" not in log  # a deploy's log shows no traceback
    assert not list(tmp_path.glob("chatapp-metrics-*"))  # removed at exit


def test_an_explicit_worker_count_without_redis_is_refused(tmp_path) -> None:
    result = gunicorn(tmp_path, {}, "-w", "2")
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr
    assert not list(tmp_path.glob("chatapp-metrics-*"))  # nothing left behind


def test_web_concurrency_from_the_platform_is_pinned_to_one_worker(make_server) -> None:
    server = make_server({"WEB_CONCURRENCY": "4"})
    log = server.log()
    assert "WEB_CONCURRENCY=4 ignored" in log
    assert log.count("Booting worker") == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_FRAME_BYTES", "lots"),
        ("DATABASE_URL", "postgres://db.example/chat"),
        ("REDIS_URL", "http://example"),
        ("REDIS_URL", "redis://host:notaport/0"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path, variable: str, value: str) -> None:
    result = gunicorn(tmp_path, {variable: value})
    assert result.returncode != 0
    assert variable in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("chatapp-metrics-*"))  # nothing left behind


def test_sigterm_while_a_worker_boots_stops_the_server_at_once(make_server) -> None:
    server = make_server()
    worker = server.health()["pid"]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: server.log().count("Booting worker") == 2, 10, "gunicorn's new worker booting")
    started = time.monotonic()
    server.signal(signal.SIGTERM)  # while the new worker is still booting (it used to be lost)
    server.wait(timeout=30)
    assert time.monotonic() - started < 5  # not the 20 s of the graceful timeout
