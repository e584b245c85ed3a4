"""RedisBackplane: several workers, on one machine or many, joined by Redis pub/sub, a channel
per room (as Socket.IO's sharded Redis adapter): a worker listens only to the rooms it has
clients in, so adding workers adds room for messages too, not only for connections. On a Redis
Cluster (REDIS_CLUSTER=1) the channels are sharded (SSUBSCRIBE, SPUBLISH): a room's events
travel only through the master that owns the room's slot (backplane/cluster.py).

Links, and the listener greenlet that owns each:
- A link is one subscription connection to one Redis node (the one Redis, or each master of a
  cluster) with the rooms filed on it (`_where`: room -> link, by the room's slot). Its
  listener greenlet alone uses the connection, to read and to write (SUBSCRIBE, UNSUBSCRIBE,
  PING); others only ask, through its `unasked`. So a failed write is the listener's, and goes
  through its loss path; and should redis-py connect again behind its back (it does, on some
  errors), the listener takes that for a loss too: events sent to the old connection are gone.
- `subscribe(room)` is called before a client joins a room (Realtime.join). It returns once
  Redis has confirmed the subscription, so every event published after it returns reaches this
  worker; the client's history is read after that, and nothing falls between the two (an event
  in both is dropped by the client's seq floor). The listener sends what was asked for at its
  next tick (every TICK s at most), in one SUBSCRIBE (sharded: one SSUBSCRIBE per slot, written
  together): a restart that rejoins 10,000 rooms takes one round trip, not 10,000.
- A room this worker no longer has clients in (`in_use`, the Hub's rooms) is kept for LINGER
  seconds (a reload must not churn subscriptions), then unsubscribed; it is taken out of the
  wanted rooms before the UNSUBSCRIBE goes, so a join meanwhile subscribes again, after it.
- Each link pings every PING_EVERY seconds: Redis that says nothing, pong or event, for
  HANG_AFTER seconds (hung, or a network that drops packets without a reset) is taken as lost.

Losses are told per room, so that only the clients of the rooms concerned resume:
- A lost link reports its rooms lost (`on_change(rooms, False)`: their events may be missed
  from now on, and those heard are dropped until the room is back), connects again with
  capped backoff (on a cluster, after asking it which master now serves each slot: a
  failover or a resharding moves rooms to another link), subscribes every room filed on it
  and pings. Each lost room that is confirmed again, on whichever link,
  is reported back at the pong that follows (`on_change(rooms, True)`): its clients resume
  with `since`, and what was published meanwhile is in the store. No event of a lost room is
  delivered before then: a client shown one published after a missed one would resume past
  the missed one.
- On a cluster, a slot moved away by a resharding makes its master drop the room's subscription
  (an SUNSUBSCRIBE we did not ask for): that room alone is lost, filed where its slot is now,
  and reported back once confirmed there.

On the wire: channel `chat:{room}:events` (the braces: the room's cluster slot, with its
keys), payload `seq \\n event`, the event's JSON bytes as the publisher serialised them. Chat
messages are published there by the store's own append script (chatapp/store/redis.py), in
the step that gives them their id, so a room's channel carries its messages in id order.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from time import monotonic
from typing import Protocol

import gevent
import redis
from gevent.event import Event

from ...redis_errors import REDIS_ERRORS
from ...unavailable import Unavailable
from . import Deliver, InUse, OnChange, unattached

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
PING_EVERY = 1.0  # seconds between a link's pings
HANG_AFTER = 4.0  # seconds without a word from Redis before a link counts as lost
SUBSCRIBE_WAIT = 5.0  # seconds a joiner waits for Redis to confirm a room's subscription
TICK = 0.05  # seconds at most between a listener's looks at what was asked for
TURN_EVERY = 64  # messages a listener hands on before it lets the other greenlets run
LINGER = 30.0  # seconds a room without clients here stays subscribed
# Always subscribed, though nothing is published there: a connection with no subscription
# is not in pub/sub mode, where Redis answers a PING with a pong message the listener reads.
ALWAYS = "chat:backplane"


def channel(room: str) -> str:
    """The channel of `room`'s events (in its cluster slot)."""
    return f"chat:{{{room}}}:events"


def _room_of(name: bytes) -> str:
    """The room of a channel."""
    return name.decode().removeprefix("chat:{").removesuffix("}:events")


class Nodes(Protocol):
    """Where each room's channel is served: the one Redis (OneRedis), or a cluster's masters
    (cluster.ClusterNodes)."""

    sharded: bool  # SSUBSCRIBE/SPUBLISH, one slot per command

    def masters(self) -> list[str]:
        """The nodes that serve rooms now, by name."""
        ...

    def node_of(self, channel: str) -> str:
        """The name of the node that serves `channel` (as last known; no I/O)."""
        ...

    def client(self, name: str) -> redis.Redis:
        """A client of the node `name` alone."""
        ...

    def always(self, name: str) -> str:
        """A channel served by `name`, which its link stays subscribed to."""
        ...

    def slot(self, channel: str) -> int:
        """`channel`'s slot (SSUBSCRIBE takes the channels of one slot)."""
        ...

    def refresh(self) -> None:
        """Ask Redis again which node serves which room (after a loss or a moved slot); not
        again within REFRESH_EVERY s of the last time (a moved slot's rooms come one by one)."""
        ...

    def publish(self, channel: str, payload: bytes) -> None: ...

    def close(self) -> None:
        """Close the connections made for the links (not those of the client given)."""
        ...


class OneRedis:
    """One Redis serves every room."""

    sharded = False

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def masters(self) -> list[str]:
        return [""]

    def node_of(self, channel: str) -> str:
        return ""

    def client(self, name: str) -> redis.Redis:
        return self._client

    def always(self, name: str) -> str:
        return ALWAYS

    def slot(self, channel: str) -> int:
        return 0

    def refresh(self) -> None:
        pass

    def publish(self, channel: str, payload: bytes) -> None:
        self._client.publish(channel, payload)

    def close(self) -> None:
        pass  # the links use the client given


class _Reconnects:
    """The connects of one subscription connection after its first: redis-py's, behind our back."""

    def __init__(self) -> None:
        self.count = 0

    def connected(self, connection: redis.connection.AbstractConnection) -> None:
        self.count += 1


class Silent(redis.ConnectionError):
    """Redis said nothing, not even a pong, for HANG_AFTER seconds."""


class RedisBackplane:
    def __init__(self, client: redis.Redis) -> None:
        if isinstance(client, redis.RedisCluster):
            from .cluster import ClusterNodes

            self._nodes: Nodes = ClusterNodes(client)
        else:
            self._nodes = OneRedis(client)
        self._deliver: Deliver = unattached
        self._on_change: OnChange = lambda rooms, back: None
        self._in_use: InUse = lambda room: True
        self._started = False
        # Links by node name, and the link each wanted room is filed on. Both are changed by
        # any greenlet without I/O between a look and its change (gevent switches only at
        # I/O): subscribe files a new room; a listener moves rooms when the nodes change.
        self._links: dict[str, _Link] = {}
        self._where: dict[str, _Link] = {}
        self._lost: set[str] = set()  # rooms reported lost, not yet confirmed again
        self._unused_since: dict[str, float] = {}  # rooms without clients here, since (monotonic)

    def attach(self, deliver: Deliver, on_change: OnChange, in_use: InUse) -> None:
        """`deliver` and `on_change(rooms, back)` are called from a listener greenlet: each
        event heard, and rooms whose events may be missed (back=False) or are heard again after
        that (back=True). `in_use(room)`: whether this worker still has clients in `room`."""
        self._deliver = deliver
        self._on_change = on_change
        self._in_use = in_use

    @property
    def healthy(self) -> bool:
        """Redis answers: the one Redis, or some master of a cluster (the rooms of a master
        that does not are told `degraded`; a whole fleet out of its balancer's rotation
        because one master failed would be worse)."""
        return self._started and (not self._links or any(link.healthy for link in self._links.values()))

    @property
    def subscriptions(self) -> int:
        """Rooms this worker listens to (confirmed by Redis)."""
        return sum(link.confirmed for link in self._links.values())

    def subscribe(self, room: str) -> None:
        """Listen to `room` from now on; returns once Redis has confirmed it, or raises
        Unavailable: at once while its node is away (after a loss), else after SUBSCRIBE_WAIT
        (a worker just started waits for its first connection)."""
        link = self._where.get(room)
        if link is None:
            link = self._file(room, Event())
        if link.lost and not link.healthy:  # connecting again: the client had better retry
            raise Unavailable("the backplane (Redis) cannot be reached now; try again")
        confirmed = link.rooms[room]  # it moves with the room, should the room move
        self._unused_since.pop(room, None)
        if not confirmed.wait(SUBSCRIBE_WAIT):
            raise Unavailable("the backplane (Redis) did not confirm the room's subscription in time")

    def publish(self, room: str, event: bytes, seq: int | None = None) -> None:
        """One PUBLISH round trip (the caller's greenlet waits for it, not for delivery). A
        message lost here is in the store: clients get it when they resume."""
        try:
            self._nodes.publish(channel(room), b"%b\n%b" % (b"" if seq is None else b"%d" % seq, event))
        except REDIS_ERRORS as exc:  # an outage: the listener sees it too
            log.error("publish to %s lost: %s", room, exc)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for name in self._nodes.masters():
                self._link(name)

    def stop(self) -> None:
        """Stop every listener (a worker's end; tests)."""
        for link in list(self._links.values()):
            link.retire()
        gevent.killall([link.greenlet for link in self._links.values() if link.greenlet is not None])
        self._nodes.close()

    # -- called by the links' listeners -------------------------------------------------------
    def _link(self, name: str) -> _Link:
        """The link to node `name`, started if new."""
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = _Link(self, name, self._nodes)
            link.start()
        return link

    def _file(self, room: str, confirmed: Event) -> _Link:
        """File `room` on the link of its node; its listener subscribes at its next tick."""
        link = self._link(self._nodes.node_of(channel(room)))
        link.rooms[room] = confirmed
        link.unasked.add(room)
        self._where[room] = link
        return link

    def _received(self, message: dict) -> None:
        room = _room_of(message["channel"])
        if room in self._lost:
            # Heard again before it is reported back: dropped. Its clients resume with `since`
            # once it is, so none of them is shown an event past one it missed while lost
            # (that one would be skipped for good). The store has them all.
            return
        try:
            seq, event = message["data"].split(b"\n", 1)
            self._deliver(room, event, int(seq) if seq else None)
        except ValueError:  # not ours (another program on the channel): drop it alone
            log.warning("backplane: dropped a malformed message for %s: %r", room, message["data"][:80])

    def _report_lost(self, rooms: Iterable[str]) -> None:
        lost = frozenset(rooms) - self._lost
        if lost:
            self._lost |= lost
            self._on_change(lost, False)

    def _report_back(self, rooms: set[str]) -> None:
        back = frozenset(rooms & self._lost)
        if back:
            self._lost -= back
            self._on_change(back, True)

    def _refile(self, room: str, confirmed: Event) -> None:
        """File `room` where Redis says its slot is now (a moved slot: the one room, not every
        room as after a loss; the slots asked for at most every REFRESH_EVERY s however many
        of a moved slot's rooms come through here). Filed on the same link again while Redis
        does not say otherwise: its (S)SUBSCRIBE is then refused with MOVED, and here it comes
        again."""
        self._nodes.refresh()
        self._file(room, confirmed)

    def _replan(self) -> None:
        """Ask Redis which node serves what, then move each room whose node changed to the
        link of its node now (a failover, a resharding): a room that was confirmed is lost
        until its new link confirms it."""
        self._nodes.refresh()
        masters = set(self._nodes.masters())
        for name, link in list(self._links.items()):
            if name not in masters:
                link.retire()
                del self._links[name]
        for name in masters:
            self._link(name)
        for room, link in list(self._where.items()):
            name = self._nodes.node_of(channel(room))
            if link.retired or link.name != name:
                confirmed = link.forget(room)
                if confirmed.is_set():
                    self._report_lost((room,))
                    confirmed.clear()
                self._file(room, confirmed)

    def _unused(self, rooms: Iterable[str], now: float) -> list[str]:
        """Of `rooms`, those without clients here for LINGER s, taken out of the wanted rooms
        (a join from now on subscribes again, after their UNSUBSCRIBE)."""
        gone = []
        for room in rooms:
            if self._in_use(room):
                self._unused_since.pop(room, None)
            elif now - self._unused_since.setdefault(room, now) >= LINGER:
                gone.append(room)
                del self._where[room], self._unused_since[room]
                self._lost.discard(room)
        return gone


class _Link:
    """One subscription connection to one node, and the rooms filed on it. Its listener
    greenlet alone reads and writes the connection."""

    def __init__(self, backplane: RedisBackplane, name: str, nodes: Nodes) -> None:
        self._backplane = backplane
        self.name = name
        self._nodes = nodes
        # Rooms filed here -> set once Redis confirmed them on the current connection. Added
        # to by any greenlet (RedisBackplane._file); confirmed, cleared and let go by the
        # listener; moved off (`forget`) by whichever listener replans after a loss or a move.
        self.rooms: dict[str, Event] = {}
        self.unasked: set[str] = set()  # filed, not yet sent: the next tick sends them together
        self.healthy = False  # until the listener's first pong
        self.lost = False  # the connection was lost since it was first made
        self.retired = False  # its node serves no rooms any more: the listener ends
        self.greenlet: gevent.Greenlet | None = None
        self._reconnects = _Reconnects()  # of the current connection
        self._leaving: dict[str, int] = {}  # UNSUBSCRIBEs sent, by channel, not yet confirmed
        self._back: set[str] = set()  # rooms confirmed again, reported when the burst is over
        self._backoff = BACKOFF_FIRST  # before the next connect after a loss

    @property
    def confirmed(self) -> int:
        return sum(1 for confirmed in self.rooms.values() if confirmed.is_set())

    def start(self) -> None:
        self.greenlet = gevent.spawn(self._listen)

    def retire(self) -> None:
        self.retired = True

    def forget(self, room: str) -> Event:
        """Take `room` off this link (to be filed on another); its confirmation, as it was."""
        self.unasked.discard(room)
        self._back.discard(room)
        return self.rooms.pop(room)

    def _listen(self) -> None:
        """The listener: hands each event to the backplane; on a lost or silent connection,
        reports its rooms lost and connects again with capped backoff (from the first step
        again once it is back)."""
        while not self.retired:
            pubsub = None
            try:
                pubsub = self._nodes.client(self.name).pubsub()
                self._connect(pubsub)
                for message in self._heard(pubsub):
                    self._handle(message)
            except REDIS_ERRORS as exc:
                if not self.retired:
                    log.warning("backplane: Redis connection lost (%s); retrying in %.1f s", exc, self._backoff)
            except Exception:  # a bug must not end delivery for good
                log.exception("backplane: listener failed; retrying in %.1f s", self._backoff)
            finally:
                for confirmed in self.rooms.values():
                    confirmed.clear()
                self._back.clear()
                if pubsub is not None:
                    pubsub.close()
            if self.retired:
                return
            if self.healthy or not self.lost:
                self.healthy, self.lost = False, True
                self._backplane._report_lost(self.rooms)
            gevent.sleep(self._backoff * (0.5 + random.random() / 2))
            self._backoff = min(self._backoff * 2, BACKOFF_CAP)
            try:
                self._backplane._replan()  # a failover: some rooms (or all) are served elsewhere now
            except REDIS_ERRORS as exc:  # no node answers: the next round asks again
                log.warning("backplane: cannot ask Redis where rooms are served (%s)", exc)

    def _connect(self, pubsub: redis.client.PubSub) -> None:
        """A new connection: every room filed here subscribed at once, then a PING, whose pong
        says they are all in place. Any later connect of it is redis-py's, not ours: a loss."""
        self.unasked.clear()
        self._leaving.clear()
        self._subscribe(pubsub, [self._nodes.always(self.name), *map(channel, self.rooms)])
        pubsub.ping()
        self._reconnects = _Reconnects()
        pubsub.connection.register_connect_callback(self._reconnects.connected)  # held weakly: we keep it

    def _handle(self, message: dict | None) -> None:
        kind = message["type"] if message is not None else None
        if kind in ("message", "smessage"):
            self._backplane._received(message)
        elif kind in ("subscribe", "ssubscribe"):  # from now on every publish to the room reaches us
            room = _room_of(message["channel"])
            confirmed = self.rooms.get(room)
            if confirmed is not None:
                confirmed.set()
                self._back.add(room)
        elif kind in ("unsubscribe", "sunsubscribe"):
            self._unsubscribed(message["channel"])
        elif kind == "pong" and not self.healthy:  # after every SUBSCRIBE sent before it
            self.healthy, self._backoff = True, BACKOFF_FIRST
            if self.lost:
                log.warning("backplane: connected to Redis again")
        if self._back and self.healthy and kind in (None, "pong"):  # the burst of confirmations is over
            back, self._back = self._back, set()
            self._backplane._report_back(back)

    def _unsubscribed(self, name: bytes) -> None:
        """An UNSUBSCRIBE confirmed, or (on a cluster) a room's slot moved to another master,
        which drops its subscribers: that room is lost until subscribed where it is now."""
        decoded = name.decode()
        if self._leaving.get(decoded):
            self._leaving[decoded] -= 1
            return
        if decoded == self._nodes.always(self.name):
            raise redis.ConnectionError(f"{decoded}'s slot moved: where rooms are served has changed")
        room = _room_of(name)
        if room in self.rooms:
            log.warning("backplane: %s is served by another node now", room)
            confirmed = self.forget(room)
            confirmed.clear()
            self._backplane._report_lost((room,))
            self._backplane._refile(room, confirmed)

    def _heard(self, pubsub: redis.client.PubSub) -> Iterator[dict | None]:
        """What Redis sends (confirmations, events, pongs; None when it has nothing now),
        pinging it every PING_EVERY and letting go of unused rooms; raises Silent when it has
        said nothing for HANG_AFTER s."""
        heard = next_ping = monotonic()
        handed = 0
        while not self.retired:
            if self._reconnects.count:
                raise redis.ConnectionError("the subscription's connection was made again: events may be lost")
            now = monotonic()
            if self.unasked:
                rooms, self.unasked = self.unasked, set()
                self._subscribe(pubsub, [channel(room) for room in rooms])
                pubsub.ping()  # its pong ends the burst of confirmations: lost rooms are back then
            if now >= next_ping:
                pubsub.ping()  # answered by a pong, after whatever Redis sent before it
                next_ping = now + PING_EVERY
                self._let_go(pubsub, now)
            try:
                message = pubsub.get_message(timeout=max(min(next_ping - now, TICK), 0.0))
            except redis.exceptions.AskError as exc:  # MOVED: an (S)SUBSCRIBE for a slot served elsewhere now
                self._moved(exc.slot_id)
                continue
            if message is not None:
                heard = monotonic()
                handed += 1
                if handed % TURN_EVERY == 0:
                    gevent.sleep(0)  # get_message does not switch while Redis has sent more
            elif monotonic() - heard > HANG_AFTER:
                raise Silent(f"no answer from Redis for {HANG_AFTER:.0f} s")
            yield message

    def _moved(self, slot: int) -> None:
        """A slot this worker had not heard had moved: its rooms here (not yet confirmed: an
        (S)SUBSCRIBE was refused) are filed where it is now, or asked for here again should
        Redis not say so yet. The link and its other rooms are not disturbed."""
        log.warning("backplane: slot %d is served by another node now", slot)
        for name in [name for name in self._leaving if self._nodes.slot(name) == slot]:
            del self._leaving[name]  # refused too: no confirmation will come
        for room in [room for room, confirmed in self.rooms.items() if not confirmed.is_set()]:
            if self._nodes.slot(channel(room)) == slot:
                self._backplane._refile(room, self.forget(room))

    def _let_go(self, pubsub: redis.client.PubSub, now: float) -> None:
        """Unsubscribe the rooms without clients here for LINGER s."""
        gone = self._backplane._unused(list(self.rooms), now)
        for room in gone:
            del self.rooms[room]
            self.unasked.discard(room)
        if gone:
            channels = [channel(room) for room in gone]
            for name in channels:
                self._leaving[name] = self._leaving.get(name, 0) + 1
            self._subscribe(pubsub, channels, unsubscribe=True)

    def _subscribe(self, pubsub: redis.client.PubSub, channels: list[str], unsubscribe: bool = False) -> None:
        """(Un)subscribe `channels`: one command (sharded: one per slot, as a cluster wants),
        written together, without waiting for the answers."""
        if not self._nodes.sharded:
            (pubsub.unsubscribe if unsubscribe else pubsub.subscribe)(*channels)
            return
        by_slot: dict[int, list[str]] = {}
        for name in channels:
            by_slot.setdefault(self._nodes.slot(name), []).append(name)
        for names in by_slot.values():
            (pubsub.sunsubscribe if unsubscribe else pubsub.ssubscribe)(*names)
