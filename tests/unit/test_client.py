"""A connection's writer side (no socket): its send queue, coalescing and skip_through."""

from __future__ import annotations

import gevent
import pytest
from gevent.queue import Full

from chatapp.config import Config
from chatapp.realtime.client import Connection, SendQueue
from chatapp.realtime.hub import Batch
from chatapp.realtime.protocol import text_frame


def connection() -> Connection:
    return Connection(None, None, Config(), {}, "test")  # type: ignore[arg-type]


def test_one_batch_is_written_as_its_shared_frame() -> None:
    batch = Batch([b"a", b"b"])
    assert connection()._render([batch]) is batch.frame


def test_several_batches_are_coalesced_into_one_frame() -> None:
    assert connection()._render([Batch([b"a"]), Batch([b"b", b"c"])]) == text_frame(b"a\nb\nc")


def test_skip_through_drops_events_up_to_the_floor_whenever_they_come() -> None:
    conn = connection()
    conn.skip_through(5)
    mixed = Batch([b"m4", b"join", b"m5"], [4, None, 5])
    newer = Batch([b"m6", b"m7"], [6, 7])
    assert conn._render([mixed, newer]) == text_frame(b"join\nm6\nm7")
    assert conn._render([newer]) is newer.frame  # nothing to drop: the shared frame
    late = Batch([b"m3", b"m8"], [3, 8])  # another worker published m3 late
    assert conn._render([late]) == text_frame(b"m8")
    assert conn._render([Batch([b"m2"], [2])]) == b""


def test_send_queue_is_bounded_and_hands_everything_over_in_order() -> None:
    queue = SendQueue(3)
    for item in "abc":
        queue.put_nowait(item)
    with pytest.raises(Full):
        queue.put_nowait("d")
    assert queue.take(wait=False) == ["a", "b", "c"]
    assert queue.take(wait=False) == [] and queue.empty()


def test_send_queue_wakes_its_waiting_taker() -> None:
    queue = SendQueue(8)
    taker = gevent.spawn(queue.take, True)
    gevent.sleep(0)  # the taker now waits
    assert not taker.ready()
    queue.put_nowait("x")
    queue.put_nowait("y")
    assert taker.get(timeout=5) == ["x", "y"]


def test_send_queue_wakes_the_next_taker_after_one_was_killed_while_waiting() -> None:
    queue = SendQueue(8)
    taker = gevent.spawn(queue.take, True)
    gevent.sleep(0)
    taker.kill(timeout=5)  # as a writer is, at shutdown
    assert taker.dead
    second = gevent.spawn(queue.take, True)
    gevent.sleep(0)
    queue.put_nowait("x")
    assert second.get(timeout=5) == ["x"]
