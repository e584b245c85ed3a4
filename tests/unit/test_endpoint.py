"""The WebSocket route as gunicorn drives it (its socket in the WSGI environ, StopIteration to
end the request), on a socket pair: the request ends at the handshake, and the connection lives
on in its session without it."""

from __future__ import annotations

import base64
import gc
import json
import weakref
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.socket
import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import CloseConnection, TextMessage

from chatapp.config import Config
from chatapp.realtime import Connection, Realtime
from chatapp.realtime.endpoint import HANDSHAKE_HEADERS

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
}


class Marker:
    """Put in a request's WSGI environ: alive as long as something holds the environ."""


class Client:
    """The client's end of an upgraded socket pair."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        head = b""
        with gevent.Timeout(5):
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101")
        self.ws.receive_data(rest)

    def next(self) -> TextMessage | CloseConnection:
        with gevent.Timeout(5):
            while True:
                for event in self.ws.events():
                    if isinstance(event, TextMessage | CloseConnection):
                        return event
                self.ws.receive_data(self.sock.recv(65536))

    def close(self) -> None:
        self.sock.sendall(self.ws.send(CloseConnection(1000)))


SOCKETS: list[Any] = []  # every socket pair's ends, closed after each test


@pytest.fixture
def app() -> Iterator[tuple[Flask, Realtime]]:
    app = Flask(__name__)
    rt = Realtime(Config(max_connections_per_ip=1))
    rt.init_app(app)
    rt.start()

    @rt.on_connect
    def connect(conn: Connection) -> None:
        conn.send({"type": "welcome", "room": conn.args["room"]})

    yield app, rt
    while SOCKETS:
        SOCKETS.pop().close()


def upgrade(
    app: Flask, marker: Marker | None = None, headers: dict[str, str] | None = None, environs: list | None = None
) -> Client | int:
    """One upgrade request as gunicorn makes it (UPGRADE's headers, and `headers`): the
    client's end once upgraded, else the status. Its WSGI environ is put in `environs`."""
    ours, theirs = gevent.socket.socketpair()
    SOCKETS.extend((ours, theirs))
    environ = EnvironBuilder(path="/ws", query_string="room=r", headers={**UPGRADE, **(headers or {})}).get_environ()
    if environs is not None:
        environs.append(environ)
    environ.update({"REMOTE_ADDR": "127.0.0.2", "gunicorn.socket": ours, "test.marker": marker})
    statuses: list[str] = []
    try:
        with gevent.Timeout(5):  # the old way, the request lived as long as the connection
            app.wsgi_app(environ, lambda status, headers: statuses.append(status))
    except StopIteration:  # flask-sock's word to gunicorn: the request is over, upgraded
        return Client(theirs)
    return int(statuses[0].split()[0])


def test_the_request_ends_at_the_handshake_and_its_connection_keeps_nothing_of_it(app) -> None:
    app, rt = app
    marker = Marker()
    gone = weakref.ref(marker)
    client = upgrade(app, marker)
    del marker
    assert isinstance(client, Client)
    welcome = client.next()
    assert isinstance(welcome, TextMessage) and json.loads(welcome.data)["room"] == "r"
    gc.collect()
    assert gone() is None  # the WSGI environ is freed, and the request with it
    assert rt.health().connections == 1
    # The connection still counts against its address until it is over (its session ends it).
    assert upgrade(app) == 429
    client.close()
    assert isinstance(client.next(), CloseConnection)
    assert rt.drain(5)  # no shutdown asked: nothing to wait for
    second = upgrade(app)
    assert isinstance(second, Client)
    second.next()
    rt.shutdown()
    closing = second.next()
    assert isinstance(closing, TextMessage) and json.loads(closing.data)["code"] == "shutting_down"
    assert isinstance(second.next(), CloseConnection)
    second.close()
    assert rt.drain(5)  # its session is over


def test_the_hooks_see_a_browsers_headers_and_the_handshakes_second_parse_only_its_own(app) -> None:
    """simple-websocket rebuilds the request from the environ's headers for h11 to parse again:
    it gets those of the handshake, not the dozen a browser sends beside them."""
    app, rt = app
    seen: dict[str, str] = {}
    rt.before_upgrade(lambda upgrade: seen.update(upgrade.headers))
    browser = {"User-Agent": "Mozilla/5.0", "Accept-Language": "en", "Cookie": "a=b", "Pragma": "no-cache"}
    environs: list[dict[str, Any]] = []
    client = upgrade(app, headers=browser, environs=environs)
    assert isinstance(client, Client) and isinstance(client.next(), TextMessage)
    assert browser.items() <= seen.items() and seen["Sec-Websocket-Key"] == UPGRADE["Sec-WebSocket-Key"]
    left = {name for name in environs[0] if name.startswith("HTTP_")}
    assert left == HANDSHAKE_HEADERS - {"HTTP_SEC_WEBSOCKET_EXTENSIONS", "HTTP_SEC_WEBSOCKET_PROTOCOL"}
    client.close()
    assert isinstance(client.next(), CloseConnection)
    environs.clear()  # not upgraded (no `Connection: Upgrade`): answered, its headers left for the access log
    assert upgrade(app, headers={**browser, "Connection": "keep-alive"}, environs=environs) == 400
    assert environs[0]["HTTP_USER_AGENT"] == "Mozilla/5.0"


def test_a_worker_past_max_connections_refuses_the_upgrade_with_503_in_json() -> None:
    app = Flask(__name__)
    rt = Realtime(Config(max_connections=1))
    rt.init_app(app)
    rt.on_connect(lambda conn: conn.send({"type": "welcome"}))
    first = upgrade(app)
    assert isinstance(first, Client)
    first.next()
    assert upgrade(app) == 503
    first.close()
    assert isinstance(first.next(), CloseConnection)
    assert rt.drain(5)
    assert isinstance(upgrade(app), Client)  # room again
    while SOCKETS:
        SOCKETS.pop().close()
