"""One connection's session, over a real socket pair with wsproto on the client's side: the
app's handlers from connect to disconnect, and errors to the sender alone."""

from __future__ import annotations

import json
from typing import Any

import gevent
import gevent.socket
import pytest
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import CloseConnection, TextMessage

from chatapp.config import Config
from chatapp.realtime import Connection, ErrorCode, ProtocolError, Realtime, Upgrade
from chatapp.realtime import hub as hub_module
from tests.unit.fakes import Listener, listener


class Peer:
    """The client's end: sends masked frames, reads the server's events and close frame."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[dict[str, Any]] = []
        self.close_code: int | None = None

    def send(self, event: dict[str, Any]) -> None:
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(event))))

    def next(self) -> dict[str, Any]:
        with gevent.Timeout(5):
            while not self.pending:
                self._read()
        return self.pending.pop(0)

    def closed(self) -> int:
        """The code of the server's close frame, once it came; answers it."""
        with gevent.Timeout(5):
            while self.close_code is None:
                self._read()
        self.close()
        return self.close_code

    def close(self) -> None:
        self.sock.sendall(self.ws.send(CloseConnection(1000)))

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server shut the socket down")
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.pending += [json.loads(line) for line in event.data.split("\n")]
            elif isinstance(event, CloseConnection):
                self.close_code = event.code


@pytest.fixture
def rt() -> Realtime:
    rt = Realtime(Config())
    rt.start()
    return rt


@pytest.fixture
def serve(rt: Realtime):
    """serve(data): a session of `rt` in its greenlet, and the client's end of its socket."""
    sockets: list[Any] = []

    def serve(data: dict[str, Any]) -> tuple[gevent.Greenlet, Peer]:
        ours, theirs = gevent.socket.socketpair()
        sockets.extend((ours, theirs))
        upgrade = Upgrade(path="/ws", headers={}, cookies={}, address="127.0.0.2", host="localhost", data=data)
        frames = WSConnection(ConnectionType.SERVER)
        return gevent.spawn(rt._sessions.serve, ours, frames, upgrade, {"room": "r"}), Peer(theirs)

    yield serve
    for sock in sockets:
        sock.close()


def test_a_session_runs_the_apps_handlers_from_connect_to_disconnect(rt: Realtime, serve) -> None:
    seen: list[tuple] = []

    @rt.on_connect
    def connect(conn: Connection) -> None:
        seen.append(("connect", dict(conn.data), conn.args, conn.remote_addr))
        conn.send({"type": "welcome"})

    @rt.on("ping")
    def ping(conn: Connection, event: dict[str, Any]) -> None:
        if event["n"] < 0:
            raise ProtocolError(ErrorCode.BAD_FIELD, "n must not be negative")
        conn.send({"type": "pong", "n": event["n"]})

    rt.on_disconnect(lambda conn: seen.append(("gone",)))
    session, peer = serve({"user": "ann"})
    assert peer.next() == {"type": "welcome"}
    assert seen == [("connect", {"user": "ann"}, {"room": "r"}, "127.0.0.2")]
    peer.send({"type": "ping", "n": 1})
    assert peer.next() == {"type": "pong", "n": 1}
    peer.send({"type": "ping", "n": -1, "cid": "k1"})
    assert peer.next() == {"type": "error", "code": "bad_field", "detail": "n must not be negative", "cid": "k1"}
    peer.send({"type": "dance", "cid": "k2"})
    assert peer.next() == {"type": "error", "code": "bad_type", "detail": "unknown event type 'dance'", "cid": "k2"}
    peer.close()
    session.get(timeout=10)
    assert seen[-1] == ("gone",)
    listener(rt, "sync", "sync")  # its join waits for the Hub: the session's unregister is done
    assert rt.health().connections == 1  # the listener's alone


def test_a_connect_handler_that_refuses_closes_with_1008_and_no_disconnect(rt: Realtime, serve) -> None:
    seen: list[str] = []

    @rt.on_connect
    def connect(conn: Connection) -> None:
        raise ProtocolError(ErrorCode.BAD_PARAM, "room must be given")

    rt.on_disconnect(lambda conn: seen.append("gone"))
    session, peer = serve({})
    assert peer.next() == {"type": "error", "code": "bad_param", "detail": "room must be given"}
    assert peer.closed() == 1008
    session.get(timeout=10)
    assert seen == []


def test_a_hub_that_does_not_answer_a_join_refuses_the_client_as_unavailable_without_a_traceback(
    rt: Realtime, serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker too busy to answer within ACK_TIMEOUT (a storm of connects queued ahead of the
    Hub) sheds the joiner: `unavailable` and 1013, a warning, no traceback and no 1011."""
    monkeypatch.setattr(hub_module, "ACK_TIMEOUT", 0.2)

    class Busy(Listener):
        def offer(self, item: object) -> bool:
            gevent.sleep(1.0)  # a Hub round that does not end: no join is answered meanwhile
            return True

    busy = Busy("busy")
    rt._hub.register(busy)
    rt.join(busy, "r")  # type: ignore[arg-type]
    rt.on_connect(lambda conn: rt.join(conn, "r"))
    rt.emit("r", {"type": "note"})  # the Hub is in `busy.offer` from now on for a second
    session, peer = serve({})
    refusal = peer.next()
    assert (refusal["type"], refusal["code"]) == ("error", "unavailable"), refusal
    assert peer.closed() == 1013
    session.get(timeout=10)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert any("refused" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
