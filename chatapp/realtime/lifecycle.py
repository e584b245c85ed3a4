"""The layer's greenlets in one worker: the Hub, the ticker (pings) and the sampler (metrics),
started together with the backplane's and presence's own, once, in the worker (after gevent's
patching: gunicorn.conf.py's post_worker_init, or the first client or emit).
"""

from __future__ import annotations

import logging
import time

import gevent

from ..config import Config
from .backplane import Backplane
from .hub import Hub
from .metrics import SAMPLE_EVERY, Sampler
from .presence import Presence

log = logging.getLogger(__name__)

PING_TURNS = 25  # the ticker pings the connections in this many turns per PING_INTERVAL


class Lifecycle:
    def __init__(self, config: Config, hub: Hub, backplane: Backplane, presence: Presence) -> None:
        self._config = config
        self._hub = hub
        self._backplane = backplane
        self._presence = presence
        self._hub_greenlet: gevent.Greenlet | None = None
        self.started_at: float | None = None  # time.monotonic() when this worker's greenlets started
        self._metrics = Sampler(hub)

    def start(self) -> None:
        """Start the Hub, the ticker, the sampler, and the backplane's and presence's greenlets
        (once)."""
        if self._hub_greenlet is None:
            self.started_at = time.monotonic()
            self._hub_greenlet = gevent.spawn(self._hub.run)
            gevent.spawn(self._ticker)
            gevent.spawn(self._sampler)
            self._backplane.start()
            self._presence.start()

    def stop(self) -> None:
        """At the worker's end: what presence holds for all workers, given back."""
        self._presence.stop()

    @property
    def hub_alive(self) -> bool:
        """False once the Hub greenlet has died (a bug: delivery is over on this worker)."""
        return self._hub_greenlet is None or not self._hub_greenlet.dead

    @property
    def uptime(self) -> float:
        """Seconds since the greenlets started (0 before)."""
        return time.monotonic() - self.started_at if self.started_at is not None else 0.0

    def _ticker(self) -> None:
        """The ticker greenlet: every PING_INTERVAL, every writer pings its peer, one
        PING_TURNS-th of them at a time (each connection at its own turn, the same one every
        time): pinging all at once started a writer for every idle client in one Hub round,
        10,000 at once on a busy worker."""
        step = self._config.ping_interval / PING_TURNS
        turn, due = 0, time.monotonic()
        while True:
            # Turns kept to the clock, not to sleeps that each wake a little late: 25 lates a
            # cycle would stretch a connection's ping period past what PONG_TIMEOUT allows.
            due += step
            gevent.sleep(max(0.0, due - time.monotonic()))
            self._hub.ping_turn(turn, PING_TURNS)
            turn = (turn + 1) % PING_TURNS

    def _sampler(self) -> None:
        """The sampler greenlet: every SAMPLE_EVERY, this worker's figures into the metrics."""
        while True:
            self.sample_metrics()
            gevent.sleep(SAMPLE_EVERY)

    def sample_metrics(self) -> None:
        """This worker's figures into the metrics now (the sampler's round; and at worker exit,
        so that its last second is counted)."""
        try:
            self._metrics.sample(self._backplane.healthy)
        except Exception:  # the figures may be off for a while; delivery goes on
            log.exception("sampling the metrics failed")
