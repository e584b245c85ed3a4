"""A connection's send queue (its rendering: test_framing.py)."""

from __future__ import annotations

import gevent
import pytest
from gevent.queue import Full

from chatapp.client import SendQueue


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
