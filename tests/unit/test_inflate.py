"""permessage-deflate that cannot be a bomb, on wsproto connections talking to each other."""

from __future__ import annotations

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from chatapp.realtime.inflate import bound_inflate

LIMIT = 16384


def deflating_pair() -> tuple[WSConnection, WSConnection]:
    """A server and a client that agreed permessage-deflate; the server's inflate bounded."""
    server, client = WSConnection(ConnectionType.SERVER), WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="chat.example", target="/ws", extensions=[PerMessageDeflate()])))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection(extensions=[PerMessageDeflate()])))
    assert isinstance(next(client.events()), AcceptConnection)
    bound_inflate(server.connection, LIMIT)
    return server, client


def test_a_small_frame_that_inflates_past_the_limit_is_refused_without_inflating_it() -> None:
    server, client = deflating_pair()
    bomb = client.send(TextMessage("a" * (50 * 1024 * 1024)))  # 50 MB in about 50 KB
    assert len(bomb) < 64 * 1024
    server.receive_data(bomb)
    events = list(server.events())
    assert [type(e) for e in events] == [CloseConnection] and events[0].code == 1009
    (extension,) = server.connection._proto.extensions
    assert extension.inflated == LIMIT + 1  # all it inflated: the work is bounded (whole, 50 MB and 0.3 s)


def test_messages_within_the_limit_inflate_as_ever() -> None:
    server, client = deflating_pair()
    for text in ("hello", "x" * LIMIT, "é" * 100):  # one at the limit exactly
        server.receive_data(client.send(TextMessage(text)))
        assert [e.data for e in server.events()] == [text]
