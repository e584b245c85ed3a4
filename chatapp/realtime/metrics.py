"""The realtime layer's metrics (prometheus-client), and the plain counts behind the hot ones.

Hot paths (a delivery, a frame) never touch prometheus-client (a multiprocess value is a lock
and an mmap write): they add to plain ints in `Stats`, and each worker's sampler greenlet
copies those, and the gauges, into the metrics every SAMPLE_EVERY seconds. Cold paths (a
connect, a close, an error event) count directly. How every worker's values add up for
/metrics and /info is chatapp/metrics.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

from prometheus_client import Counter, Gauge

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
RECEIVED = Counter("chat_backplane_events_received", "Events the backplane brought to this worker's Hub (its rooms')")
RECEIVED_OWN = Counter(
    "chat_backplane_events_own",
    "Backplane events received for a room this worker has clients in (received minus these: heard for nobody)",
)


@dataclass(slots=True)
class Stats:
    """One worker's hot-path counts, plain ints: the Hub adds events_out and dropped_slow (in
    its greenlet), each connection's reader events_in and its writer frames and bytes, the
    backplane's deliveries received, and of those received_own: for a room with clients here."""

    events_in: int = 0
    events_out: int = 0
    frames: int = 0
    bytes: int = 0
    dropped_slow: int = 0
    received: int = 0
    received_own: int = 0


_COUNTED = {
    "events_in": EVENTS_IN,
    "events_out": EVENTS_OUT,
    "frames": FRAMES,
    "bytes": BYTES,
    "dropped_slow": DROPPED_SLOW,
    "received": RECEIVED,
    "received_own": RECEIVED_OWN,
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
