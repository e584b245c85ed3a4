"""History, resume with `since`, cid de-duplication, restarts and the JSON API, on real servers."""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading

import pytest

from tests.helpers import TIMEOUT, Client, Server, stored, wait_for

TOKEN = "s3cret-token"


def room() -> str:
    return "h-" + secrets.token_hex(4)


def api_messages(server: Server, room: str, query: str = "") -> dict:
    status, _, body = server.get(f"/api/rooms/{room}/messages{query}")
    assert status == 200, body
    return json.loads(body)


def post(server: Server, room: str, body: object, token: str | None = TOKEN) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{server.url}/api/rooms/{room}/messages", data, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def chunked_post(server: Server, room: str, chunks: bytes) -> tuple[int, dict]:
    """A bot's post whose body is sent with Transfer-Encoding: chunked, `chunks` as they are."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.putrequest("POST", f"/api/rooms/{room}/messages")
        for name, value in [
            ("Authorization", f"Bearer {TOKEN}"),
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ]:
            connection.putheader(name, value)
        connection.endheaders(chunks)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def say_all(client: Client, texts: list[str]) -> list[dict]:
    """Send each text and wait for its echo; the stored messages, in order."""
    echoed = []
    for text in texts:
        client.say(text)
        echoed.append(client.expect("message", text=text))
    return echoed


def test_welcome_carries_the_last_messages_oldest_first(make_server) -> None:
    server = make_server({"HISTORY_ON_JOIN": "3"})
    r = room()
    with Client(server, r, "writer") as writer:
        writer.expect("welcome")
        sent = say_all(writer, [f"m{n}" for n in range(5)])
    with Client(server, r, "reader") as reader:
        welcome = reader.expect("welcome")
        assert welcome["history"] == sent[-3:] and welcome["truncated"] is False


def test_since_replays_exactly_what_was_missed_across_a_restart(make_server, tmp_path) -> None:
    server = make_server()
    r = room()
    with Client(server, r, "away") as away, Client(server, r, "writer") as writer:
        away.expect("welcome")
        writer.expect("welcome")
        seen = say_all(writer, ["before 1", "before 2"])
        assert [away.expect("message")["id"] for _ in seen] == [m["id"] for m in seen]
    port = server.port
    server.stop()
    server = make_server(port=port)  # the same database file
    with Client(server, r, "writer") as writer:
        writer.expect("welcome")
        missed = say_all(writer, ["while away 1", "while away 2", "while away 3"])
    with Client(server, r, "away", since=seen[-1]["id"]) as back:
        welcome = back.expect("welcome")
        assert welcome["history"] == missed and welcome["truncated"] is False
    with Client(server, r, "current", since=missed[-1]["id"]) as current:
        assert current.expect("welcome")["history"] == []


def test_an_unknown_or_pruned_since_is_truncated(make_server) -> None:
    server = make_server({"HISTORY_LIMIT": "5", "HISTORY_ON_JOIN": "2"})
    r = room()
    with Client(server, r, "writer") as writer:
        writer.expect("welcome")
        sent = say_all(writer, [f"m{n}" for n in range(12)])
    for since in (sent[0]["id"], "999999999"):
        with Client(server, r, "late", since=since) as late:
            welcome = late.expect("welcome")
            assert welcome["truncated"] is True and welcome["history"] == sent[-2:]
    kept = api_messages(server, r, "?limit=500")["messages"]
    assert 5 <= len(kept) < 10 and kept == sent[-len(kept) :]


def test_a_welcome_carries_a_bounded_number_of_bytes(make_server) -> None:
    """A resume after 300 messages of 2,000 characters (600 KB): the welcome holds the newest
    that fit in READ_BYTES (256 KB) and says `more`; the rest is the API's to page."""
    server = make_server({"RATE_LIMIT": "100000", "HISTORY_ON_JOIN": "1000"})
    r = room()
    with Client(server, r, "writer") as writer:
        since = writer.expect("welcome")
        writer.say("first")
        first = writer.expect("message")
        texts = say_all(writer, [f"{n:03d}" + "x" * 1997 for n in range(300)])
    with Client(server, r, "back", since=first["id"], epoch=since["epoch"]) as back:
        welcome = back.expect("welcome")
        history = welcome["history"]
        assert welcome["more"] is True and welcome["truncated"] is False
        assert 100 < len(history) < 300 and history == texts[-len(history) :]  # the newest, up to the last
        assert sum(len(json.dumps(m)) for m in history) <= 256 * 1024
    with Client(server, r, "new") as new:
        assert new.expect("welcome")["more"] is True  # the last HISTORY_ON_JOIN (1000) would be 600 KB too
    # The API's pages have the same bound: `more` says a page was cut short, and paging on
    # from its last id gets the rest.
    page = api_messages(server, r, f"?since={first['id']}&limit=500&epoch={since['epoch']}")
    assert (
        page["more"] is True
        and 100 < len(page["messages"]) < 300
        and page["messages"] == texts[: len(page["messages"])]
    )
    newest = api_messages(server, r, "?limit=500")
    assert newest["more"] is True and newest["messages"] == texts[-len(newest["messages"]) :]
    assert stored(server, r) == [first, *texts]


def test_a_bad_since_is_refused(server: Server) -> None:
    with Client(server, room(), "x", since="yesterday") as client:
        code, reason, events = client.closed()
        assert code == 1008 and "since" in reason and events[0]["code"] == "bad_param"


def test_a_resent_cid_is_stored_and_broadcast_once(server: Server) -> None:
    r = room()
    with Client(server, r, "sender") as sender, Client(server, r, "other") as other:
        sender.expect("welcome")
        other.expect("welcome")
        sender.say("only once", cid="abc")
        first = sender.expect("message")
        sender.say("only once", cid="abc")  # as after a reconnect, before its echo came
        assert sender.expect("message") == first  # the ack of the resend: the stored message
        sender.say("next")
        assert other.expect("message") == first
        assert other.expect("message")["text"] == "next"  # nothing in between
    assert [m["text"] for m in api_messages(server, r)["messages"]] == ["only once", "next"]


def test_a_cid_is_the_senders_own(server: Server) -> None:
    """Another person sending your cid (say, one it saw on your message) neither suppresses
    your message nor gets it as its ack; you, reconnected with your key, do get the ack."""
    r = room()
    ann_key, eve_key = "ann-" + secrets.token_hex(8), "eve-" + secrets.token_hex(8)
    with Client(server, r, "ann", key=ann_key) as ann, Client(server, r, "eve", key=eve_key) as eve:
        ann_uid = ann.expect("welcome")["you"]["uid"]
        eve_uid = eve.expect("welcome")["you"]["uid"]
        assert ann_uid != eve_uid and len(ann_uid) == 16 and ann_key not in ann_uid
        eve.say("first!", cid="shared")  # eve guessed, or copied, the cid ann is about to use
        eves = eve.expect("message")
        ann.say("hello", cid="shared")
        anns = ann.expect("message", text="hello")  # stored and broadcast: not eve's as an ack
        assert anns["id"] != eves["id"] and anns["user"]["uid"] == ann_uid
        assert eve.expect("message", text="hello") == anns
        eve.say("hello (mine now?)", cid="shared")
        assert eve.expect("message") == eves  # eve's own resend gets eve's own message back
    with Client(server, r, "ann", key=ann_key) as again:  # a reload: a new connection, the same key
        welcome = again.expect("welcome")
        assert welcome["you"]["uid"] == ann_uid
        again.say("hello", cid="shared")
        assert again.expect("message") == anns  # the ack: stored once
    assert [m["text"] for m in api_messages(server, r)["messages"]] == ["first!", "hello"]


def test_history_and_live_events_neither_overlap_nor_leave_a_gap(make_server) -> None:
    server = make_server({"RATE_LIMIT": "100000", "HISTORY_ON_JOIN": "100", "HISTORY_LIMIT": "5000"})
    r = room()
    stop = threading.Event()
    started = threading.Barrier(4)

    def blast(who: str) -> None:
        with Client(server, r, who) as blaster:
            blaster.expect("welcome")
            started.wait(TIMEOUT)
            n = 0
            while not stop.is_set() and n < 5000:
                blaster.say(f"{who} {n}")
                n += 1
                if n % 50 == 0:  # keep some in flight, not thousands
                    blaster.expect("message", text=f"{who} {n - 1}", timeout=TIMEOUT * 2)

    threads = [threading.Thread(target=blast, args=(f"blaster{k}",)) for k in range(3)]
    for thread in threads:
        thread.start()
    try:
        started.wait(TIMEOUT)
        for _ in range(30):
            with Client(server, r, "joiner") as joiner:
                welcome = joiner.expect("welcome")
                ids = [int(m["id"]) for m in welcome["history"]]
                joiner.say("marker")  # every message before the marker's echo comes before it
                while True:
                    event = joiner.expect("message")
                    if event["text"] == "marker":
                        break
                    ids.append(int(event["id"]))
                assert ids == sorted(set(ids)), "a message came twice or out of order"
                kept = [int(m["id"]) for m in stored(server, r)]  # every page: more than 500 may have come
                assert ids == kept[kept.index(ids[0]) :][: len(ids)], "a message is missing"
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT * 4)


def test_sigterm_after_a_burst_loses_nothing_that_was_echoed(make_server) -> None:
    server = make_server({"RATE_LIMIT": "100000"})
    r = room()
    with Client(server, r, "burst") as burst:
        burst.expect("welcome")
        for n in range(200):
            burst.say(f"burst {n}", cid=f"k{n}")
        server.signal(signal.SIGTERM)
        code, _reason, events = burst.closed(timeout=10)
        assert code == 1001
    echoed = [e["text"] for e in events if e["type"] == "message"]
    assert server.wait(15) == 0
    server = make_server(port=server.port)
    stored = [m["text"] for m in api_messages(server, r, "?limit=500")["messages"]]
    assert echoed and stored[: len(echoed)] == echoed


def test_kill_9_of_the_worker_loses_nothing_stored(make_server) -> None:
    server = make_server()
    r = room()
    with Client(server, r, "writer") as writer:
        writer.expect("welcome")
        sent = say_all(writer, [f"stored {n}" for n in range(20)])
        worker = server.health()["pid"]
        os.kill(worker, signal.SIGKILL)
        writer.closed(timeout=10)  # the connection dies with the worker
    wait_for(lambda: server.health()["pid"] != worker, 20, "gunicorn's new worker on the same file")
    assert api_messages(server, r)["messages"] == sent
    # and the whole server killed at once: the next one starts on the same file
    with Client(server, r, "writer") as writer:
        writer.expect("welcome")
        sent += say_all(writer, ["after the first kill"])
        worker = server.health()["pid"]
        os.kill(worker, signal.SIGKILL)
        server.proc.kill()
        server.wait(10)
    server = make_server(port=server.port)
    assert api_messages(server, r)["messages"] == sent


def test_two_servers_on_one_file_write_concurrently(make_server) -> None:
    one = make_server({"RATE_LIMIT": "100000"})
    two = make_server({"RATE_LIMIT": "100000"})
    r = room()
    results: dict[str, list[dict]] = {}

    def write(server: Server, who: str) -> None:
        with Client(server, r, who) as client:
            client.expect("welcome")
            results[who] = say_all(client, [f"{who} {n}" for n in range(150)])

    threads = [threading.Thread(target=write, args=(s, w)) for s, w in ((one, "one"), (two, "two"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stored = api_messages(one, r, "?limit=500")["messages"]
    assert stored == api_messages(two, r, "?limit=500")["messages"]
    assert len(stored) == 300 and len({m["id"] for m in stored}) == 300
    assert [int(m["id"]) for m in stored] == sorted(int(m["id"]) for m in stored)
    for who in ("one", "two"):
        assert [m for m in stored if m["user"]["name"] == who] == results[who]


# -- the JSON API -----------------------------------------------------------------------------
def test_api_history_pages_with_since_and_limit(server: Server) -> None:
    r = room()
    with Client(server, r, "writer") as writer:
        writer.expect("welcome")
        sent = say_all(writer, [f"m{n}" for n in range(5)] + ["m5 é"])
    whole = api_messages(server, r)
    assert whole == {
        "room": r, "messages": sent, "more": False, "truncated": False, "reset": False, "epoch": whole["epoch"]
    }  # fmt: skip
    assert "m5 é".encode() in server.get(f"/api/rooms/{r}/messages")[2]  # UTF-8 as it is, not \u00e9
    assert api_messages(server, r, "?limit=2")["messages"] == sent[-2:]
    page = api_messages(server, r, f"?since={sent[1]['id']}&limit=3&epoch={whole['epoch']}")
    assert page["messages"] == sent[2:5] and page["truncated"] is False
    another = "1" if whole["epoch"] != "1" else "2"
    other = api_messages(server, r, f"?since={sent[1]['id']}&limit=3&epoch={another}")
    assert other["messages"] == sent[-3:] and other["truncated"] is True and other["reset"] is True
    assert api_messages(server, r.upper())["messages"] == sent  # rooms fold to lower case


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("?limit=0", "bad_param"),
        ("?limit=501", "bad_param"),
        ("?limit=ten", "bad_param"),
        ("?limit=%C2%B2", "bad_param"),  # a superscript two: a digit to str.isdigit, not to int()
        ("?since=x", "bad_param"),
        ("?since=%D9%A3", "bad_param"),  # an Arabic-Indic three
        ("?since=1&epoch=not-hex", "bad_param"),
    ],
)
def test_api_history_refuses_bad_parameters(server: Server, query: str, error: str) -> None:
    status, _, body = server.get(f"/api/rooms/lobby/messages{query}")
    assert status == 400 and json.loads(body)["error"] == error


def test_api_a_bad_room_is_a_400(server: Server) -> None:
    status, _, body = server.get("/api/rooms/no%20spaces/messages")
    assert status == 400 and json.loads(body)["error"] == "bad_param"


def test_api_publish_is_404_without_a_token(server: Server) -> None:
    status, body = post(server, "lobby", {"name": "bot", "text": "hi"})
    assert status == 404 and body["error"] == "not_found"


def test_api_publish(make_server) -> None:
    server = make_server({"CHAT_API_TOKEN": TOKEN})
    r = room()
    with Client(server, r, "human") as human:
        human.expect("welcome")
        assert post(server, r, {"name": "bot", "text": "hi"}, token="wrong")[0] == 401
        assert post(server, r, {"name": "bot", "text": "hi"}, token=None)[0] == 401
        for body, error in [
            (b"not json", "bad_json"),
            ([1, 2], "bad_json"),
            ({"text": "no name"}, "bad_field"),
            ({"name": "bot"}, "bad_field"),
            ({"name": "bot", "text": " "}, "empty"),
            ({"name": "bot", "text": "x" * 2001}, "too_long"),
            ({"name": "b\x07t", "text": "hi"}, "bad_field"),
            (b'{"name": "\\ud800", "text": "hi"}', "bad_field"),  # a lone surrogate, in each field
            (b'{"name": "bot", "text": "\\udc00"}', "bad_field"),
            (b'{"name": "bot", "text": "hi", "cid": "\\ud800"}', "bad_field"),
            (b"[" * 20_000 + b"]" * 20_000, "bad_json"),  # deeper than Python's parser goes
        ]:
            status, answer = post(server, r, body)
            assert (status, answer["error"]) == (400, error), body
        status, stored = post(server, r, {"name": "deploy-bot", "text": "v2 is out", "cid": "rel-2"})
        assert status == 201 and stored["user"] == {"id": "bot:deploy-bot", "name": "deploy-bot"}
        assert human.expect("message") == stored  # live, like any other message
        assert post(server, r, {"name": "deploy-bot", "text": "v2 is out", "cid": "rel-2"}) == (200, stored)
        assert api_messages(server, r)["messages"] == [stored]
        status, answer = post(server, r, {"name": "bot", "text": "x" * 70_000})  # past the body limit
        assert (status, answer["error"]) == (413, "request_entity_too_large")
        for chunks in (b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"):  # a bad size; no CRLF after a chunk
            status, answer = chunked_post(server, r, chunks)
            assert (status, answer["error"]) == (400, "bad_body")
    assert "Traceback" not in server.log()  # nothing a client sends is a server error


def test_api_reads_past_api_rate_limit_are_refused_per_address_and_a_bots_posts_are_not_reads(make_server) -> None:
    server = make_server({"API_RATE_LIMIT": "1", "PROXY_HOPS": "1", "CHAT_API_TOKEN": TOKEN})  # a read a second
    r, one, other = room(), {}, {"X-Forwarded-For": "203.0.113.8"}  # 127.0.0.1; another address
    assert server.get(f"/api/rooms/{r}/messages", one)[0] == 200
    for path in (f"/api/rooms/{r}/messages?limit=500", f"/api/rooms?room={r}"):  # within the second
        status, headers, body = server.get(path, one)
        assert (status, headers["Retry-After"], json.loads(body)["error"]) == (429, "1", "too_many_requests")
    assert server.get(f"/api/rooms/{r}/messages", other)[0] == 200  # another address has its own
    assert post(server, r, {"name": "bot", "text": "hi"})[0] == 201  # from 127.0.0.1 too, past its reads
    assert "Traceback" not in server.log()


def test_api_rooms_lists_rooms_online(server: Server) -> None:
    r = room()
    with Client(server, r, "a") as a, Client(server, r, "b") as b:
        a.expect("welcome")
        b.expect("welcome")
        a.say("one")
        said = a.expect("message")
        status, _, body = server.get(f"/api/rooms?room={r}")
        assert status == 200
        assert {"room": r, "members": 2, "messages": 1, "last": said["id"]} in json.loads(body)["rooms"]
