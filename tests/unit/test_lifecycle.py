"""The worker's greenlets (chatapp/realtime/lifecycle.py): the ticker's pings keep to the clock."""

from __future__ import annotations

import time

import gevent
from gevent.event import Event

from chatapp.config import Config
from chatapp.realtime import lifecycle
from chatapp.realtime.lifecycle import PING_TURNS, Lifecycle


class Turns:
    """A Hub that records when each ping turn was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, float]] = []
        self.cycles = Event()  # set once turn 0 has come three times

    def ping_turn(self, turn: int, parts: int) -> None:
        assert parts == PING_TURNS
        self.asked.append((turn, time.monotonic()))
        if sum(1 for asked, _ in self.asked if asked == 0) == 3:
            self.cycles.set()


def test_each_connection_is_pinged_every_ping_interval_however_late_each_sleep_wakes(monkeypatch) -> None:
    """A sleep that wakes 20 ms late, 25 times a cycle, must not stretch a connection's ping
    period by 0.5 s: past PONG_TIMEOUT, a healthy peer would be dropped as silent."""
    asleep = gevent.sleep
    monkeypatch.setattr(lifecycle.gevent, "sleep", lambda seconds: asleep(seconds + 0.02))
    hub = Turns()
    life = Lifecycle(Config(ping_interval=1.0), hub, None, None)  # type: ignore[arg-type]
    ticker = gevent.spawn(life._ticker)
    try:
        assert hub.cycles.wait(10)
    finally:
        ticker.kill()
    zeros = [at for turn, at in hub.asked if turn == 0]
    periods = [b - a for a, b in zip(zeros, zeros[1:], strict=False)]
    assert all(0.9 < period < 1.1 for period in periods), periods  # drifting: 1.5 s each
