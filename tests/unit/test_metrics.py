"""The sampler: a worker's plain counts and gauges into prometheus-client, without double counting."""

from __future__ import annotations

from types import SimpleNamespace

from chatapp.metrics import figures
from chatapp.realtime.hub import Hub
from chatapp.realtime.metrics import Sampler


def total(name: str) -> float:
    return sum(figures().get(name, {}).values())


def test_the_sampler_adds_what_grew_since_its_last_sample_and_sets_the_gauges() -> None:
    hub = Hub()
    hub.connections = {"a": SimpleNamespace(queued=3), "b": SimpleNamespace(queued=7)}  # type: ignore[dict-item]
    hub.rooms = {"lobby": {}}
    sampler = Sampler(hub)
    out, frames = total("chat_events_out_total"), total("chat_frames_written_total")
    hub.stats.events_out += 5
    hub.stats.frames += 2
    sampler.sample(backplane_up=True)
    assert total("chat_events_out_total") == out + 5
    assert total("chat_frames_written_total") == frames + 2
    sampler.sample(backplane_up=False)  # nothing new: nothing added twice
    assert total("chat_events_out_total") == out + 5
    hub.stats.events_out += 1
    sampler.sample(backplane_up=False)
    assert total("chat_events_out_total") == out + 6
    assert total("chat_clients") == 2
    assert total("chat_rooms") == 1
    assert total("chat_send_queue_items") == 10
    assert total("chat_send_queue_max_items") == 7
    assert total("chat_backplane_up") == 0
