"""The chat over real sockets: a real gunicorn gevent server and real WebSocket clients."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import TIMEOUT, Client, RawClient, Server


def room() -> str:
    """A fresh room per test: tests share the module's server."""
    return "t-" + secrets.token_hex(4)


def test_welcome_then_messages_reach_everyone_in_the_room(server: Server) -> None:
    r = room()
    with Client(server, r, "alice") as alice, Client(server, r, "bob") as bob:
        welcome = alice.expect("welcome")
        assert welcome["room"] == r and welcome["you"]["name"] == "alice" and welcome["truncated"] is False
        bob_welcome = bob.expect("welcome")
        assert {m["name"] for m in bob_welcome["members"]} == {"alice", "bob"}
        alice.say("hello bob", cid="c-1")
        got_a, got_b = alice.expect("message"), bob.expect("message")
        assert got_a == got_b
        assert got_a["text"] == "hello bob" and got_a["cid"] == "c-1" and got_a["room"] == r
        assert got_a["user"] == welcome["you"] and isinstance(got_a["id"], str) and got_a["ts"] > 0


def test_welcome_is_the_first_event(server: Server) -> None:
    r = room()
    with Client(server, r, "talker") as talker:
        talker.expect("welcome")
        for n in range(30):
            talker.say(f"m{n}")
        with Client(server, r, "newcomer") as newcomer:
            assert newcomer.next()["type"] == "welcome"


def test_welcome_comes_first_while_others_join_and_type(server: Server) -> None:
    r = room()
    firsts: list[str] = []

    def join(n: int) -> None:
        with Client(server, r, f"crowd-{n}") as client:
            firsts.append(client.next()["type"])
            client.send({"type": "typing"})
            client.say(f"hello from {n}")
            client.expect("message", text=f"hello from {n}")

    threads = [threading.Thread(target=join, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert firsts == ["welcome"] * 30


def test_rooms_are_isolated(server: Server) -> None:
    one, two = room(), room()
    with Client(server, one, "a") as a, Client(server, two, "c") as c:
        a.expect("welcome")
        c.expect("welcome")
        a.say("for room one only")
        a.expect("message")  # the hub has fanned it out
        c.say("mine")
        assert c.expect("message")["text"] == "mine"  # nothing of room one came before it


def test_join_and_leave_are_announced(server: Server) -> None:
    r = room()
    with Client(server, r, "stayer") as stayer:
        stayer.expect("welcome")
        with Client(server, r, "visitor") as visitor:
            you = visitor.expect("welcome")["you"]
            assert stayer.expect("join", user=you)["room"] == r
        left = stayer.expect("leave", user=you)
        assert left["room"] == r and left["ts"] > 0


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1]", "bad_json"),
        (json.dumps({"type": "dance"}), "bad_type"),
        (json.dumps({"text": "no type"}), "bad_type"),
        (json.dumps({"type": "message"}), "bad_field"),
        (json.dumps({"type": "message", "text": "  "}), "empty"),
        (json.dumps({"type": "message", "text": "x" * 2001}), "too_long"),
        (json.dumps({"type": "message", "text": "ok", "cid": 7}), "bad_field"),
        ('{"type": "message", "text": "half \\ud800 a pair"}', "bad_field"),  # a lone surrogate
        ('{"type": "message", "text": "ok", "cid": "\\ud800"}', "bad_field"),  # in the cid, which errors echo
        ('{"type": "message", "text": " ", "cid": "\\udc00"}', "empty"),  # refused for its text, cid not echoable
        (b"\x00\x01binary", "bad_type"),
    ],
)
def test_bad_input_gets_an_error_and_the_connection_stays(server: Server, frame: str | bytes, code: str) -> None:
    r = room()
    with Client(server, r, "sender") as sender, Client(server, r, "other") as other:
        sender.expect("welcome")
        other.expect("welcome")
        sender.send(frame)
        error = sender.expect("error")
        assert error["code"] == code and error["detail"]
        sender.say("still here")
        assert sender.expect("message")["text"] == "still here"
        assert other.expect("message")["text"] == "still here"  # and nobody else saw the error
        assert "error" not in [e["type"] for e in other.pending]


def test_a_frame_over_max_frame_bytes_closes_with_1009(server: Server) -> None:
    with Client(server, room(), "big") as big:
        big.expect("welcome")
        big.send(json.dumps({"type": "message", "text": "x" * 20000}))
        code, _reason, events = big.closed()
        assert code == 1009
        assert events[-1]["code"] == "too_big"


@pytest.mark.parametrize(("query", "reason"), [({"room": "Not A Room!"}, "room"), ({"name": "x" * 40}, "name")])
def test_bad_parameters_get_an_error_then_1008(server: Server, query: dict[str, str], reason: str) -> None:
    params = {"room": "lobby", "name": "ok", **query}
    with Client(server, **params) as client:
        code, close_reason, events = client.closed()
        assert code == 1008 and reason in close_reason
        assert [e["type"] for e in events] == ["error"] and events[0]["code"] == "bad_param"


def test_a_name_is_given_when_none_is_asked(server: Server) -> None:
    with Client(server, room(), None) as client:
        assert client.expect("welcome")["you"]["name"].startswith("guest-")


def test_cross_site_origin_is_refused_before_the_upgrade(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info, connect(server.ws_url, origin="http://evil.example"):
        pass
    assert info.value.response.status_code == 403
    assert json.loads(info.value.response.body)["error"] == "bad_origin"
    with connect(server.ws_url + "?name=same", origin=server.url, open_timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT).split("\n")[0])["type"] == "welcome"


def test_allowed_origins_are_accepted(make_server) -> None:
    server = make_server({"ALLOWED_ORIGINS": "https://chat.example.com"})
    with connect(server.ws_url, origin="https://chat.example.com", open_timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT).split("\n")[0])["type"] == "welcome"
    with pytest.raises(InvalidStatus) as info, connect(server.ws_url, origin="https://other.example.com"):
        pass
    assert info.value.response.status_code == 403


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "8"}, "bad_version"),
        (
            {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "?"},
            "bad_key",
        ),
        ({}, "not_websocket"),
    ],
)
def test_a_bad_handshake_is_an_http_400(server: Server, headers: dict[str, str], error: str) -> None:
    status, response_headers, body = server.get("/ws", headers)
    assert status == 400
    assert json.loads(body)["error"] == error


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_an_upgrade_without_a_host_is_a_400_not_a_500(server: Server, version: str) -> None:
    """RFC 6455 (4.2.1) requires a Host; without one the handshake library would fail (500)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            f"GET /ws?room=lobby&name=nohost {version}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert (response.status, response.getheader("X-Content-Type-Options")) == (400, "nosniff")
        assert json.loads(response.read())["error"] == "bad_host"
    assert "Traceback" not in server.log()


def test_permessage_deflate_is_not_negotiated(server: Server) -> None:
    raw = RawClient(server, headers={"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"})
    try:
        assert raw.status == 101
        assert "sec-websocket-extensions" not in raw.head.lower()
    finally:
        raw.close()


def test_rate_limit_then_close_when_the_client_keeps_at_it(make_server) -> None:
    server = make_server({"RATE_LIMIT": "5"})
    r = room()
    with Client(server, r, "flood") as flood, Client(server, r, "observer") as observer:
        flood.expect("welcome")
        observer.expect("welcome")
        for n in range(40):
            flood.say(f"spam {n}")
        code, _reason, events = flood.closed()
        errors = [e["code"] for e in events if e["type"] == "error"]
        assert errors[0] == "rate_limited" and errors[-1] == "flood"
        assert code == 1008
        # the first five were taken, and the room got exactly those
        assert [observer.expect("message")["text"] for _ in range(5)] == [f"spam {n}" for n in range(5)]
        observer.expect("leave")
        assert not [e for e in observer.pending if e["type"] == "message"]


def test_typing_is_relayed_and_rate_limited(server: Server) -> None:
    r = room()
    with Client(server, r, "typer") as typer, Client(server, r, "watcher") as watcher:
        you = typer.expect("welcome")["you"]
        watcher.expect("welcome")
        typer.send({"type": "typing"})
        typer.send({"type": "typing"})  # within 2 s of the first: dropped
        typer.say("done")
        assert watcher.expect("typing") == {"type": "typing", "room": r, "user": you}
        watcher.expect("message")
        assert "typing" not in [e["type"] for e in watcher.pending]


def test_the_page_and_health(server: Server) -> None:
    status, headers, body = server.get("/")
    assert status == 200 and b'id="log"' in body and b'id="composer"' in body
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'self': no inline script
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert server.get("/r/dev-ops")[0] == 200
    assert b'data-room="dev-ops"' in server.get("/r/Dev-Ops")[2]
    assert server.get("/r/bad.room")[0] == 404
    assert server.get("/nowhere")[0] == 404
    assert server.get("/", method="POST")[0] == 405
    status, _, body = server.get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    for path in ("/", "/r/dev-ops", "/healthz", "/info", "/metrics", "/api/rooms", "/api/rooms/lobby/messages"):
        status, headers, _ = server.get(path)
        assert status == 200 and "Set-Cookie" not in headers, path  # the app keeps no cookie


def test_a_request_for_another_name_is_refused(server: Server) -> None:
    """DNS rebinding: a page of evil.example, whose name now points at 127.0.0.1, asks with
    Host: evil.example and a matching Origin. A server on loopback answers to its own names."""
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    for path in ("/", "/api/rooms", "/healthz"):
        status, _, body = server.get(path, {"Host": "evil.example"})
        assert (status, json.loads(body)["error"]) == (400, "bad_host"), path
    raw = RawClient(server, "/ws?room=lobby&name=rebound", headers=evil)
    assert raw.status == 400 and b"bad_host" in (raw.buffer or raw.sock.recv(4096))
    raw.close()
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert server.get("/healthz", {"Host": host})[0] == 200, host


def test_with_port_set_a_request_that_comes_in_on_loopback_is_still_for_a_loopback_name(tmp_path) -> None:
    """`PORT=... gunicorn -b 127.0.0.1:...`, `heroku local`: the platform's setting, run on a
    developer's machine, where a rebound name reaches the server on loopback. A platform's
    router connects on the network, where any name goes (test_config)."""
    server = Server(tmp_path)
    server.env["PORT"] = str(server.port)  # as the platform sets it (the bind stays loopback)
    server.start()
    try:
        status, _, body = server.get("/healthz", {"Host": "evil.example"})
        assert (status, json.loads(body)["error"]) == (400, "bad_host")
        raw = RawClient(
            server, "/ws?room=lobby&name=rebound", headers={"Host": "evil.example", "Origin": "http://evil.example"}
        )
        assert raw.status == 400
        raw.close()
        assert server.get("/healthz", {"Host": f"localhost:{server.port}"})[0] == 200
    finally:
        server.stop()


def test_every_response_says_nosniff(server: Server) -> None:
    """JSON, static files, errors and refusals too, not only the pages: a browser must never
    guess another type (a JSON body taken for HTML or script)."""
    plain = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    for path, headers, status in [
        ("/api/rooms", {}, 200),
        ("/static/chat.js", {}, 200),
        ("/static/chat.css", {}, 200),
        ("/metrics", {}, 200),
        ("/nowhere", {}, 404),
        ("/api/rooms/bad.room/messages", {}, 400),
        ("/ws", {}, 400),  # not an upgrade
        ("/ws", {**plain, "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA==", "Origin": "https://evil.example"}, 403),
    ]:
        got, answer, _ = server.get(path, headers)
        assert (got, answer.get("X-Content-Type-Options")) == (status, "nosniff"), path
    for request, status in [  # refused by gunicorn itself, before the app
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n", 400),
    ]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert (response.status, response.getheader("X-Content-Type-Options")) == (status, "nosniff")
            assert set(json.loads(response.read())) == {"error", "detail"}  # JSON, as the app's errors


def test_a_reconnect_does_not_reset_the_limits_of_an_address(make_server) -> None:
    """Connect, send, close, again: the message rate of the address holds across connections,
    and an address that comes and goes fast stops filling the room with join and leave lines."""
    server = make_server({"ADDRESS_RATE_LIMIT": "5", "ANNOUNCE_LIMIT": "3", "RATE_LIMIT": "1000"})
    with Client(server, "churn", "watcher") as watcher:  # the first announced of the address
        watcher.expect("welcome")
        answers = []
        for n in range(8):
            with Client(server, "churn", f"cycler-{n}") as cycler:
                cycler.expect("welcome")
                cycler.say(f"m{n}")
                answers.append(cycler.expect("message" if n < 5 else "error"))
        assert [a.get("code") for a in answers[5:]] == ["rate_limited"] * 3
        watcher.say("sentinel")  # refused too (the watcher shares the address): its error comes after the rest
        events = [watcher.next()]
        while events[-1]["type"] != "error":
            events.append(watcher.next())
        assert events[-1]["code"] == "rate_limited"
        told = [(e["type"], e["user"]["name"]) for e in events if e["type"] in ("join", "leave")]
    joins = [name for kind, name in told if kind == "join"]
    leaves = [name for kind, name in told if kind == "leave"]
    assert joins == ["watcher", "cycler-0", "cycler-1"] and leaves == ["cycler-0", "cycler-1"], events


def test_connections_from_one_address_are_capped_with_429(make_server) -> None:
    server = make_server({"MAX_CONNECTIONS_PER_IP": "3"})
    held = [RawClient(server, f"/ws?room=cap&name=c{i}") for i in range(3)]
    try:
        assert [c.status for c in held] == [101, 101, 101]
        refused = RawClient(server, "/ws?room=cap&name=extra")
        refused.sock.settimeout(TIMEOUT)
        body = refused.buffer or refused.sock.recv(4096)
        refused.close()
        assert refused.status == 429 and json.loads(body)["error"] == "too_many_connections"
        assert "retry-after: 10" in refused.head.lower()
        held.pop().close()
        # Once the server has seen that close, the address may connect again (no event says
        # when, from outside: try until it works, within a bound).
        deadline = time.monotonic() + TIMEOUT
        while True:
            again = RawClient(server, "/ws?room=cap&name=again")
            held.append(again)
            if again.status == 101:
                break
            assert time.monotonic() < deadline, "the address stayed capped after a close"
            time.sleep(0.05)
    finally:
        for client in held:
            client.close()


def test_a_new_room_past_the_cap_is_refused_and_the_open_ones_still_work(make_server) -> None:
    server = make_server({"MAX_ROOMS": "2"})
    with Client(server, "one", "a") as a, Client(server, "two", "b") as b:
        a.expect("welcome")
        b.expect("welcome")
        third = RawClient(server, "/ws?room=three&name=c")
        try:
            code, events = third.read_until_close()
        finally:
            third.close()
        assert code == 1008 and [e["code"] for e in events if e["type"] == "error"] == ["too_many_rooms"]
        with Client(server, "one", "d") as d:  # an open room takes more people
            d.expect("welcome")
            d.say("in")
            assert a.expect("message")["text"] == "in"


def test_a_plain_text_client_and_a_v1_client_see_each_other(server: Server) -> None:
    """/ws/text: what a terminal (websocat) or the seed's page speaks. Each text frame it sends
    is a message; it is sent lines of text, several per frame; same rooms and history as /ws."""
    from websockets.sync.client import connect

    r = "text-" + secrets.token_hex(3)
    with Client(server, r, "ann") as ann:
        ann.expect("welcome")
        ann.say("before the terminal came")
        ann.expect("message")
        url = f"ws://{server.host}/ws/text?room={r}&name=term"
        with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as term:
            lines = term.recv(timeout=TIMEOUT).split("\n")
            assert lines[:2] == [f"* you are term in #{r}, 2 here", "ann: before the terminal came"]
            while "* term joined" not in lines:  # its own join, as everyone's (maybe in the same frame)
                lines += term.recv(timeout=TIMEOUT).split("\n")
            assert ann.expect("join")["user"]["name"] == "term"
            term.send("hello from a terminal")
            assert ann.expect("message")["text"] == "hello from a terminal"
            ann.say("hi, terminal")
            seen = []
            while "ann: hi, terminal" not in seen:
                seen += term.recv(timeout=TIMEOUT).split("\n")
            assert seen == ["term: hello from a terminal", "ann: hi, terminal"]  # its own, as the room saw it
            ann.send({"type": "typing"})
            term.send("   ")  # nothing visible: an error, as a line
            assert term.recv(timeout=TIMEOUT) == "! a message needs some visible text"
        assert ann.expect("leave")["user"]["name"] == "term"
