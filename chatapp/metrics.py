"""What operators see: Prometheus metrics at /metrics (prometheus-client), and their sums
for the /info page, correct under several gunicorn workers.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at an empty directory before
the first worker starts: each worker writes its values to its own files there, and a scrape,
whichever worker answers it, adds up every worker's (gauges marked `live*` count only the
workers alive: gunicorn's `child_exit` hook drops a dead worker's). Counters of a worker that
died stay in the sums, as Prometheus expects of a counter. Without that variable (an app made
in a test process), the process's default registry is read (config.py reads the variable;
prometheus-client reads it too, to write each worker's files).

Hot paths (a delivery, a frame) never touch prometheus-client (a multiprocess value is a lock
and an mmap write): they add to plain ints in `Stats`, and each worker's sampler greenlet
copies those, and the gauges, into the metrics every SAMPLE_EVERY seconds. Cold paths (a
connect, a close, an error event) count directly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

SAMPLE_EVERY = 1.0  # seconds between a worker's copies of its Stats and gauges into the metrics

CLIENTS = Gauge("chat_clients", "Open WebSocket connections", multiprocess_mode="livesum")
ROOMS = Gauge(
    "chat_rooms",
    "Rooms with clients, counted per worker and summed (a room on two workers counts twice)",
    multiprocess_mode="livesum",
)
QUEUED = Gauge(
    "chat_send_queue_items", "Events and frames waiting in clients' send queues", multiprocess_mode="livesum"
)
QUEUE_MAX = Gauge("chat_send_queue_max_items", "Items in the fullest client send queue", multiprocess_mode="livemax")
HUB_INBOX = Gauge(
    "chat_hub_inbox", "Commands waiting for a worker's Hub (the most on one worker)", multiprocess_mode="livemax"
)
BACKPLANE_UP = Gauge(
    "chat_backplane_up", "1 when the backplane (Redis) of every worker is connected", multiprocess_mode="livemin"
)
CONNECTS = Counter("chat_connects", "WebSocket connections accepted (upgraded)")
CLOSES = Counter("chat_closes", "WebSocket connections ended, by close code", ["code"])
REFUSED = Counter("chat_handshakes_refused", "Upgrade requests refused with an HTTP error, by error", ["error"])
ERRORS = Counter("chat_error_events", "Error events sent to clients, by code", ["code"])
EVENTS_IN = Counter("chat_events_in", "Messages received from clients")
EVENTS_OUT = Counter("chat_events_out", "Events handed to clients' send queues")
FRAMES = Counter("chat_frames_written", "WebSocket frames written to clients (a room's events share one)")
BYTES = Counter("chat_bytes_written", "Bytes written to clients' sockets")
DROPPED_SLOW = Counter("chat_dropped_slow", "Clients closed with 1013 because they read too slowly")
MESSAGES = Counter("chat_messages_stored", "Chat messages stored (from clients and the HTTP API)")
STORE_SECONDS = Histogram(
    "chat_store_batch_seconds",
    "Time to store one batch of messages (one transaction or pipeline)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)


@dataclass(slots=True)
class Stats:
    """One worker's hot-path counts, plain ints: the Hub adds events_out and dropped_slow (in
    its greenlet), each connection's reader events_in and its writer frames and bytes."""

    events_in: int = 0
    events_out: int = 0
    frames: int = 0
    bytes: int = 0
    dropped_slow: int = 0


_COUNTED = {
    "events_in": EVENTS_IN,
    "events_out": EVENTS_OUT,
    "frames": FRAMES,
    "bytes": BYTES,
    "dropped_slow": DROPPED_SLOW,
}


class Sampled(Protocol):
    """What the sampler reads of a worker's Hub (hub.Hub)."""

    stats: Stats
    connections: dict
    rooms: dict

    @property
    def inbox_size(self) -> int: ...


class Sampler:
    """Copies one worker's Stats and figures into the metrics; `sample` runs in one greenlet."""

    def __init__(self, hub: Sampled) -> None:
        self.hub = hub
        self._copied = Stats()  # the part of hub.stats already added to the counters

    def sample(self, backplane_up: bool) -> None:
        stats, copied = self.hub.stats, self._copied
        for field in fields(Stats):
            now = getattr(stats, field.name)
            delta = now - getattr(copied, field.name)
            if delta:
                _COUNTED[field.name].inc(delta)
                setattr(copied, field.name, now)
        connections = list(self.hub.connections.values())
        depths = [conn.queued for conn in connections]
        CLIENTS.set(len(connections))
        ROOMS.set(len(self.hub.rooms))
        QUEUED.set(sum(depths))
        QUEUE_MAX.set(max(depths, default=0))
        HUB_INBOX.set(self.hub.inbox_size)
        BACKPLANE_UP.set(1 if backplane_up else 0)


def _registry(multiproc_dir: str | None) -> CollectorRegistry:
    """Every worker's metrics (in `multiproc_dir`), or this process's."""
    if not multiproc_dir:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, multiproc_dir)
    return registry


def exposition(multiproc_dir: str | None = None) -> tuple[bytes, str]:
    """The body and content type of /metrics (`multiproc_dir`: PROMETHEUS_MULTIPROC_DIR)."""
    return generate_latest(_registry(multiproc_dir)), CONTENT_TYPE_LATEST


def figures(multiproc_dir: str | None = None) -> dict[str, dict[str, float]]:
    """Each chat_ sample's value by its labels ("" without labels), summed over workers as
    the scrape sums them: {"chat_closes_total": {"1000": 3.0, "1001": 1.0}, ...}."""
    found: dict[str, dict[str, float]] = {}
    for family in _registry(multiproc_dir).collect():
        for sample in family.samples:
            if sample.name.startswith("chat_") and not sample.name.endswith(("_bucket", "_created")):
                label = ",".join(sample.labels.values())
                found.setdefault(sample.name, {})[label] = sample.value
    return found
