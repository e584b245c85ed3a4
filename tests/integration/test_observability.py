"""What operators see: /metrics (summed over workers), /info, and the log lines."""

from __future__ import annotations

import json
import os
import secrets
import signal
import struct

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Client, RawClient, Server, wait_for, worker_of


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics read by prometheus-client's own parser: {(sample name, labels): value}."""
    status, headers, body = server.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(server: Server, name: str, **labels: str) -> float:
    return scrape(server).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_clients_messages_errors_and_closes(make_server) -> None:
    server = make_server()
    room = "m-" + secrets.token_hex(3)
    before = scrape(server)
    with Client(server, room, "ann") as ann, Client(server, room, "bob") as bob:
        ann.expect("welcome")
        bob.expect("welcome")
        wait_for(lambda: value(server, "chat_clients") == 2, 5, "two clients counted")
        ann.say("hello")
        bob.expect("message", text="hello")
        ann.send({"type": "nonsense"})
        assert ann.expect("error")["code"] == "bad_type"
        refused = RawClient(server, f"/ws?room={room}", headers={"Sec-WebSocket-Version": "8"})
        refused.close()
        assert refused.status == 400
    closes = before.get(("chat_closes_total", (("code", "1000"),)), 0.0) + 2
    wait_for(lambda: value(server, "chat_closes_total", code="1000") == closes, 5, "both closes counted")
    wait_for(lambda: value(server, "chat_clients") == 0, 5, "the clients gone from the gauge")
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("chat_connects_total") == 2
    assert grew("chat_messages_stored_total") == 1
    assert grew("chat_store_batch_seconds_count") == 1
    assert grew("chat_events_in_total") == 2  # the message and the nonsense
    assert grew("chat_events_out_total") >= 4  # two joins, the message to both (a leave, perhaps)
    assert grew("chat_frames_written_total") >= 6  # welcomes, joins, messages, the error, closes
    assert grew("chat_bytes_written_total") > 200
    assert grew("chat_error_events_total", code="bad_type") == 1
    assert grew("chat_handshakes_refused_total", error="bad_version") == 1
    assert grew("chat_closes_total", code="1000") == 2
    assert after[("chat_backplane_up", ())] == 1


def test_metrics_add_up_every_worker_and_forget_a_dead_ones_clients(make_server, redis_server) -> None:
    server = make_server({"REDIS_URL": redis_server.url, "LOG_LEVEL": "DEBUG"}, args=("-w", "2"))  # worker_of
    room = "m-" + secrets.token_hex(3)
    clients: list[Client] = []
    try:
        on: dict[str, int] = {}  # worker pid: its clients
        while len(on) < 2 or len(clients) < 16:  # clients on both workers
            assert len(clients) < 60, "the second worker took no connection"
            client = Client(server, room, f"c{len(clients)}")
            clients.append(client)
            pid = worker_of(server, client, client.expect("welcome"))
            on[pid] = on.get(pid, 0) + 1
        by_pid = {int(pid): n for pid, n in on.items()}
        total = len(clients)
        # whichever worker answers the scrape, it counts every worker's clients
        wait_for(lambda: all(value(server, "chat_clients") == total for _ in range(6)), 5, "every scrape counts all")

        victim = min(by_pid)
        os.kill(victim, signal.SIGKILL)
        survivors = total - by_pid[victim]
        wait_for(lambda: value(server, "chat_clients") == survivors, 10, "the dead worker's clients gone")
        assert value(server, "chat_connects_total") == total  # a counter keeps what a dead worker counted
        wait_for(lambda: server.log().count("Booting worker") == 3, 10, "gunicorn's new worker")
        new = int(server.log().rsplit("Booting worker with pid: ", 1)[1].split()[0])
        # the new worker serving, and in the sums (at 0 clients)
        wait_for(lambda: server.health()["pid"] == new, 10, "the new worker answering")
        wait_for(lambda: value(server, "chat_clients") == survivors, 5, "the new worker counted, at 0")
        assert value(server, "chat_connects_total") == total
    finally:
        for client in clients:
            client.ws.close_socket()


def test_the_info_page_shows_the_live_figures(make_server) -> None:
    server = make_server()
    with Client(server, "info-" + secrets.token_hex(3), "ann") as ann:
        ann.expect("welcome")
        wait_for(lambda: value(server, "chat_clients") == 1, 5, "the client counted")
        status, headers, body = server.get("/info")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<td data-name="chat_clients">1</td>' in page
    assert '<td data-name="chat_connects_total">1</td>' in page
    assert f"worker {server.health()['pid']}" in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"


def test_json_log_lines_tell_connects_closes_drops_and_refusals_and_no_secrets(make_server) -> None:
    token, secret = "tok-" + secrets.token_hex(8), "key-" + secrets.token_hex(8)
    server = make_server(
        {
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",  # connects and closes are logged at DEBUG
            "CHAT_API_TOKEN": token,
            "SECRET_KEY": secret,
            "PING_INTERVAL": "0.2",
            "PONG_TIMEOUT": "0.3",
        }
    )
    room = "log-" + secrets.token_hex(3)
    with Client(server, room, "ann") as ann:
        ann_id = ann.expect("welcome")["you"]["id"]
        ann.say("a private word")
        ann.expect("message")
    silent = RawClient(server, f"/ws?room={room}&name=silent")  # never answers a ping
    leaving = RawClient(server, f"/ws?room={room}&name=leaving")
    leaving.read_frame()  # the welcome
    leaving.send_frame(0x8, struct.pack("!H", 4321) + b"my own words")  # its close, its reason
    assert leaving.read_until_close()[0] == 4321
    leaving.close()
    RawClient(server, "/ws", headers={"Origin": "https://evil.example"}).close()
    status, _, _ = server.get(f"/api/rooms/{room}/messages", {"Authorization": "Bearer wrong-" + token}, method="POST")
    assert status == 401

    def lines() -> list[dict]:
        text = server.log()
        return [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON

    def logged(event: str, **fields: object) -> bool:
        return any(line.get("event") == event and all(line.get(k) == v for k, v in fields.items()) for line in lines())

    wait_for(lambda: logged("drop", cause="silent"), 5, "the silent client's drop")
    silent.close()
    assert logged("connect", conn=ann_id, addr="127.0.0.1")
    wait_for(lambda: logged("close", conn=ann_id, code=1000), 5, "ann's close")
    assert logged("refused", error="bad_origin", status=403)
    wait_for(lambda: logged("close", code=4321, by="peer", reason=""), 5, "the peer's close, without its words")
    assert value(server, "chat_closes_total", code="other") == 1  # a client's own code: no label of its own
    assert any(line["logger"].startswith("gunicorn") for line in lines())  # gunicorn's lines are JSON too
    assert len([line for line in lines() if line["message"].startswith("Booting worker")]) == 1  # once each
    assert all({"time", "level", "logger", "pid", "message"} <= line.keys() for line in lines())
    text = server.log()
    assert token not in text and secret not in text and "a private word" not in text and "my own words" not in text
