"""The realtime layer's API (Realtime): rooms, emits, who is where, health, and the hooks
before the upgrade; on a real Hub greenlet, with stand-ins for connections (no sockets)."""

from __future__ import annotations

import base64

import gevent
import pytest
from flask import Flask

from chatapp.config import Config
from chatapp.realtime import ErrorCode, ProtocolError, Realtime, Refused, Upgrade
from tests.unit.fakes import Listener, listener

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
}


@pytest.fixture
def rt() -> Realtime:
    rt = Realtime(Config(max_rooms=2))
    rt.start()
    return rt


def settle(rt: Realtime, member: Listener, room: str) -> None:
    """Return once the Hub has handled every command given before: a join waits for the Hub,
    which takes commands in order (joining a room again changes nothing)."""
    rt.join(member, room)  # type: ignore[arg-type]


def test_an_emit_reaches_every_member_of_its_room_and_no_one_else(rt: Realtime) -> None:
    a, b, other = listener(rt, "a", "r"), listener(rt, "b", "r"), listener(rt, "other", "s")
    rt.emit("r", {"type": "hello", "n": 1}, seq=5)
    settle(rt, other, "s")
    assert a.events() == b.events() == [{"type": "hello", "n": 1}]
    assert other.events() == []


def test_a_member_that_left_gets_no_more_events_and_is_no_longer_counted(rt: Realtime) -> None:
    a, b = listener(rt, "a", "r", "s"), listener(rt, "b", "r")
    assert rt.members("r", 10) == ([a.info, b.info], 2)
    rt.leave(a, "r")  # type: ignore[arg-type]
    rt.emit("r", {"type": "after"})
    settle(rt, b, "r")
    assert a.events() == [] and b.events() == [{"type": "after"}]
    assert rt.members("r", 10) == ([b.info], 1)
    assert rt.members("r", 0) == ([], 1)
    assert rt.local_rooms() == rt.rooms() == {"r": 1, "s": 1}
    assert rt.counts(["r", "none"]) == {"r": 1, "none": 0}


def test_backplane_events_are_counted_and_apart_those_of_rooms_with_clients_here(rt: Realtime) -> None:
    a = listener(rt, "a", "r")
    rt.emit("r", {"type": "hello"})
    rt.emit("nobody-here", {"type": "hello"})  # heard, for no one on this worker
    settle(rt, a, "r")
    stats = rt._hub.stats
    assert (stats.received, stats.received_own) == (2, 1)


def test_a_new_room_past_max_rooms_is_refused_and_open_ones_still_take_people(rt: Realtime) -> None:
    a = listener(rt, "a", "one", "two")
    with pytest.raises(ProtocolError) as refused:
        rt.join(a, "three")  # type: ignore[arg-type]
    assert refused.value.code == ErrorCode.TOO_MANY_ROOMS
    listener(rt, "b", "one")
    assert rt.local_rooms() == {"one": 2, "two": 1}


def test_joiners_racing_to_open_rooms_cannot_pass_max_rooms_together(rt: Realtime) -> None:
    """Each sees one room open of two before any join is applied: the Hub's count decides."""
    listener(rt, "a", "one")
    racers = [listener(rt, f"racer-{n}") for n in range(5)]
    joins = [gevent.spawn(rt.join, racer, f"new-{n}") for n, racer in enumerate(racers)]
    gevent.joinall(joins, timeout=5)
    refused = [join.exception for join in joins if join.exception is not None]
    assert len(refused) == 4 and all(exc.code == ErrorCode.TOO_MANY_ROOMS for exc in refused)
    assert len(rt.local_rooms()) == 2


def test_health_tells_this_workers_figures(rt: Realtime) -> None:
    a = listener(rt, "a", "r")
    listener(rt, "b", "r")
    settle(rt, a, "r")
    health = rt.health()
    assert health.healthy and health.backplane == "MemoryBackplane"
    assert (health.connections, health.rooms, health.dropped_slow) == (2, 1, 0)
    assert health.uptime > 0


def test_shutdown_closes_every_client_with_1001(rt: Realtime) -> None:
    a = listener(rt, "a", "r")
    rt.shutdown()
    late = listener(rt, "late")
    settle(rt, a, "r")
    assert a.closed is not None and late.closed is not None
    assert a.closed[:2] == late.closed[:2] == (1001, ErrorCode.SHUTTING_DOWN)


def test_an_apps_hook_runs_after_the_layers_own_and_refuses_with_its_own_status() -> None:
    app = Flask(__name__)
    rt = Realtime(Config(max_connections_per_ip=1))
    rt.init_app(app)
    seen: list[tuple] = []

    @rt.before_upgrade
    def auth(upgrade: Upgrade) -> None:
        seen.append((upgrade.path, upgrade.cookies.get("session"), upgrade.address, upgrade.host))
        raise Refused(401, "unauthorized", "log in first", {"WWW-Authenticate": "Cookie"})

    http = app.test_client()
    http.set_cookie("session", "s1")
    for _ in range(2):  # the first one's count against its address ended with it: no 429
        response = http.get("/ws", headers=UPGRADE, environ_base={"REMOTE_ADDR": "127.0.0.2"})
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Cookie"
        assert response.get_json() == {"error": "unauthorized", "detail": "log in first"}
    assert seen == [("/ws", "s1", "127.0.0.2", "localhost")] * 2
    response = http.get("/ws", headers={**UPGRADE, "Origin": "https://elsewhere.example"})
    assert response.status_code == 403 and response.get_json()["error"] == "bad_origin"
    response = http.post("/ws")  # not an upgrade: the layer's check answers it
    assert response.status_code == 400 and response.get_json()["error"] == "not_websocket"
    assert len(seen) == 2  # the app's hook saw neither
