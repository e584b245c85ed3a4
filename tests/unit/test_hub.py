"""The Hub, driven through its inbox by a real Hub greenlet, with fake members (no sockets)."""

from __future__ import annotations

import gevent
import pytest
from gevent.queue import Queue

from chatapp.realtime import hub as hub_module
from chatapp.realtime.framing import Batch, message_frame
from chatapp.realtime.hub import PING, Hub, HubStuck, PingTick, Publish
from chatapp.realtime.protocol import CloseCode, ErrorCode


class FakeMember:
    """Records what the Hub offers; refuses once `capacity` batches are held (a slow client)."""

    def __init__(self, id_: str, capacity: int = 1000) -> None:
        self.id = id_
        self.rooms: set[str] = set()
        self.capacity = capacity
        self.received: Queue = Queue()
        self.closed: tuple[CloseCode, ErrorCode | None] | None = None

    def offer(self, item: Batch | PingTick) -> bool:
        if self.received.qsize() >= self.capacity:
            self.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.TOO_SLOW)
            return False
        self.received.put(item)
        return True

    def close(self, code: CloseCode, error: ErrorCode | None = None, detail: str = "") -> None:
        self.closed = (code, error)

    def events(self, timeout: float = 2.0) -> list[bytes]:
        batch = self.received.get(timeout=timeout)
        return batch.payload.split(b"\n")


@pytest.fixture
def hub():
    hub = Hub()
    greenlet = gevent.spawn(hub.run)
    yield hub
    greenlet.kill()


def joined(hub: Hub, room: str, *members: FakeMember) -> None:
    for member in members:
        hub.register(member)
        hub.join(member, room)


def test_publish_reaches_every_member_of_the_room_once(hub: Hub) -> None:
    a, b = FakeMember("a"), FakeMember("b")
    joined(hub, "r", a, b)
    hub.publish("r", b'{"n":1}')
    assert a.events() == [b'{"n":1}']
    assert b.events() == [b'{"n":1}']
    assert a.received.empty() and b.received.empty()


def test_rooms_are_isolated(hub: Hub) -> None:
    a, b = FakeMember("a"), FakeMember("b")
    joined(hub, "one", a)
    joined(hub, "two", b)
    hub.publish("one", b"1")
    hub.publish("two", b"2")
    assert a.events() == [b"1"]
    assert b.events() == [b"2"]
    assert a.received.empty() and b.received.empty()


def test_a_round_joins_a_rooms_events_into_one_batch_shared_by_all(hub: Hub) -> None:
    a, b = FakeMember("a"), FakeMember("b")
    joined(hub, "r", a, b)
    for n in range(5):  # all five wait in the inbox when the Hub next runs
        hub.publish("r", b"%d" % n)
    batch_a, batch_b = a.received.get(timeout=2), b.received.get(timeout=2)
    assert batch_a is batch_b  # serialised and framed once for everyone
    assert batch_a.payload == b"0\n1\n2\n3\n4" and len(batch_a.events) == 5
    assert batch_a.frame == message_frame(b"0\n1\n2\n3\n4")


def test_join_takes_effect_in_order_with_publishes(hub: Hub) -> None:
    a, late = FakeMember("a"), FakeMember("late")
    joined(hub, "r", a)
    hub.register(late)
    hub.publish("r", b"before")
    hub.join(late, "r")  # the same round as "before": it must not reach `late`
    hub.publish("r", b"after")
    assert late.events() == [b"after"]
    assert a.events() == [b"before"]
    assert a.events() == [b"after"]


def test_leave_and_unregister_stop_delivery(hub: Hub) -> None:
    a, b, c = FakeMember("a"), FakeMember("b"), FakeMember("c")
    joined(hub, "r", a, b, c)
    hub.leave(b, "r")
    hub.unregister(c)
    hub.publish("r", b"x")
    assert a.events() == [b"x"]
    gevent.sleep(0)  # the round above is done once `a` has its batch
    assert b.received.empty() and c.received.empty()
    assert [m.id for m in hub.members("r", 10)[0]] == ["a"]
    assert "c" not in hub.connections


def test_a_slow_member_is_dropped_alone_and_others_get_everything(hub: Hub) -> None:
    fast, slow = FakeMember("fast"), FakeMember("slow", capacity=3)
    joined(hub, "r", fast, slow)
    received = []
    for n in range(50):
        hub.publish("r", b"%d" % n)
        received += fast.events()  # one publish per round
    assert received == [b"%d" % n for n in range(50)]
    assert slow.closed == (CloseCode.TRY_AGAIN_LATER, ErrorCode.TOO_SLOW)
    assert slow.received.qsize() == 3
    assert slow.rooms == set() and [m.id for m in hub.members("r", 10)[0]] == ["fast"]
    assert hub.stats.dropped_slow == 1


def test_shutdown_closes_everyone_with_1001_and_refuses_newcomers(hub: Hub) -> None:
    a = FakeMember("a")
    joined(hub, "r", a)
    hub.publish("r", b"last")
    hub.shutdown()
    assert a.events() == [b"last"]  # published before the shutdown: delivered first
    late = FakeMember("late")
    joined(hub, "r", late)
    assert a.closed == (CloseCode.GOING_AWAY, ErrorCode.SHUTTING_DOWN)
    assert late.closed == (CloseCode.GOING_AWAY, ErrorCode.SHUTTING_DOWN)


def test_a_member_that_fails_is_removed_and_others_get_their_events(hub: Hub) -> None:
    class Broken(FakeMember):
        def offer(self, batch: Batch) -> bool:
            raise RuntimeError("boom")

    broken, a, b = Broken("x"), FakeMember("a"), FakeMember("b")
    joined(hub, "bad", broken, b)
    joined(hub, "r", a)
    hub.publish("bad", b"1")
    hub.publish("r", b"2")  # the same round
    assert a.events() == [b"2"]
    assert b.events() == [b"1"]
    assert broken.rooms == set() and [m.id for m in hub.members("bad", 10)[0]] == ["b"]


def test_ping_all_reaches_every_connection_in_any_room(hub: Hub) -> None:
    a, b, lonely = FakeMember("a"), FakeMember("b"), FakeMember("lonely")
    joined(hub, "r", a)
    joined(hub, "s", b)
    hub.register(lonely)
    hub.ping_turn(0, 1)
    for member in (a, b, lonely):
        assert member.received.get(timeout=2) is PING


def test_pings_go_out_in_turns_each_connection_once_per_cycle(hub: Hub) -> None:
    """The ticker pings a 25th of the connections at a time, not all in one round (10,000
    writers started at once), and each at its own turn, the same every cycle: a connection
    missed for a cycle would be taken as silent."""
    members = [FakeMember(f"c{n}") for n in range(500)]
    for member in members:
        hub.register(member)
    for cycle in range(2):
        turns = []
        for turn in range(25):
            hub.ping_turn(turn, 25)
            gevent.idle()  # the Hub has handled it
            pinged = {m.id for m in members if not m.received.empty() and m.received.get() is PING}
            turns.append(pinged)
        assert sorted(id_ for pinged in turns for id_ in pinged) == sorted(m.id for m in members)  # once each
        assert max(map(len, turns)) < 50  # about 20 a turn
        if cycle == 0:
            first = turns
    assert turns == first  # the same turn for each, every cycle


def test_tell_all_reaches_every_connection_and_close_all_spares_newcomers(hub: Hub) -> None:
    a, lonely = FakeMember("a"), FakeMember("lonely")
    joined(hub, "r", a)
    hub.register(lonely)
    hub.tell_all(b"notice")
    assert a.events() == [b"notice"] and lonely.events() == [b"notice"]
    hub.close_all(CloseCode.SERVICE_RESTART, ErrorCode.RESYNC, "reconnect")
    late = FakeMember("late")
    joined(hub, "r", late)
    assert a.closed == lonely.closed == (CloseCode.SERVICE_RESTART, ErrorCode.RESYNC)
    assert late.closed is None  # close_all without refuse_new: newcomers are welcome


def test_told_or_closed_by_room_each_member_of_those_rooms_is_reached_once_and_no_one_else(hub: Hub) -> None:
    """A failed shard's rooms: only their clients are told (degraded) and closed (resync)."""
    both, one, other, lonely = FakeMember("both"), FakeMember("one"), FakeMember("other"), FakeMember("lonely")
    joined(hub, "r", both, one)
    joined(hub, "s", both)
    joined(hub, "t", other)
    hub.register(lonely)
    hub.tell_all(b"notice", frozenset({"r", "s"}))
    hub.close_all(CloseCode.SERVICE_RESTART, ErrorCode.RESYNC, "reconnect", rooms=frozenset({"r", "s"}))
    hub.ping_turn(0, 1)  # handled after both: what the others got by then is all they get
    assert both.events() == [b"notice"] and one.events() == [b"notice"]
    assert both.closed == one.closed == (CloseCode.SERVICE_RESTART, ErrorCode.RESYNC)
    for member in (both, one, other, lonely):
        assert member.received.get(timeout=2) is PING  # nothing before it for `other` and `lonely`
    assert other.closed is None and lonely.closed is None


def test_a_join_that_fails_frees_the_joiner_at_once_and_the_round_goes_on(hub: Hub) -> None:
    a, broken = FakeMember("a"), FakeMember("broken")
    broken.rooms = frozenset()  # type: ignore[assignment]  # the Hub's add fails
    joined(hub, "r", a)
    hub.register(broken)
    hub.publish("r", b"same round")
    with gevent.Timeout(1), pytest.raises(HubStuck):  # not after ACK_TIMEOUT
        hub.join(broken, "r")
    assert a.events() == [b"same round"]
    assert [m.id for m in hub.members("r", 10)[0]] == ["a"]  # nothing half done


def test_a_join_given_up_on_is_not_applied_when_the_hub_comes_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The joiner was refused (HubStuck): the Hub, stuck until then, must not put it in the room."""
    monkeypatch.setattr(hub_module, "ACK_TIMEOUT", 0.1)
    hub, late = Hub(), FakeMember("late")
    hub.register(late)
    with pytest.raises(HubStuck):
        hub.join(late, "r")  # no Hub running yet: nobody answers
    greenlet = gevent.spawn(hub.run)
    try:
        joined(hub, "other", FakeMember("after"))  # the Hub has taken every command before it
        assert "r" not in hub.rooms and late.rooms == set()
    finally:
        greenlet.kill()


def test_what_is_not_a_command_fails_alone_and_is_logged(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    a = FakeMember("a")
    joined(hub, "r", a)
    hub.handle_round([Publish("r", b"1", None), ("publish", "r", b"2"), Publish("r", b"3", None)])  # type: ignore[list-item]
    assert a.events() == [b"1", b"3"]
    assert "hub command tuple failed" in caplog.text
