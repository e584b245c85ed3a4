"""Several workers and servers on one real redis-server: delivery, presence, history, faults."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tests.helpers import Client, RawClient, Server, free_port, require, stored, wait_for, worker_of


def room() -> str:
    return "x-" + secrets.token_hex(4)


def healthz(server: Server) -> tuple[int, dict]:
    status, _, body = server.get("/healthz")
    return status, json.loads(body)


def test_every_reader_on_every_worker_gets_every_message_once_and_in_order(make_server, redis_server) -> None:
    env = {"REDIS_URL": redis_server.url, "RATE_LIMIT": "100000"}
    one, two = make_server(env), make_server(env)
    pair = make_server({**env, "LOG_LEVEL": "DEBUG"}, args=("-w", "2"))  # worker_of reads its connects
    r = room()
    readers = [Client(one, r, "reader-one"), Client(two, r, "reader-two")]
    senders = [Client(s, r, f"sender-{n}") for n, s in enumerate([one, two, pair])]
    try:
        for client in readers + senders:
            client.expect("welcome")
        pair_workers: set[str] = set()
        while len(pair_workers) < 2:  # readers on both workers of `pair`
            assert len(readers) < 30, "the second worker took no connection"
            reader = Client(pair, r, f"reader-pair-{len(readers)}")
            readers.append(reader)
            pair_workers.add(worker_of(pair, reader, reader.expect("welcome")))
        for reader in readers:
            reader.pending.clear()  # joins of later readers

        def send(n: int, sender: Client) -> None:
            for k in range(100):
                sender.say(f"{n}:{k}")

        threads = [threading.Thread(target=send, args=(n, s)) for n, s in enumerate(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        total = 100 * len(senders)
        received = [[reader.expect("message", timeout=10)["id"] for _ in range(total)] for reader in readers]
        for ids in received:
            assert len(set(ids)) == total  # none twice, none missing
            assert ids == received[0]  # in the same order everywhere
        for reader in readers:
            assert not [e for e in reader.pending if e["type"] == "message"]  # and nothing more
    finally:
        for client in readers + senders:
            client.__exit__()


def test_presence_and_history_span_servers(make_server, redis_server) -> None:
    env = {"REDIS_URL": redis_server.url}
    one, two = make_server(env), make_server(env)
    r = room()
    with Client(one, r, "ann") as ann:
        ann_id = ann.expect("welcome")["you"]["id"]
        ann.say("said on one")
        said = ann.expect("message")
        with Client(two, r, "bob") as bob:
            welcome = bob.expect("welcome")
            assert {m["name"] for m in welcome["members"]} == {"ann", "bob"}
            assert welcome["member_count"] == 2
            assert welcome["history"] == [said]
            assert ann.expect("join")["user"]["name"] == "bob"
            bob.say("said on two")
            last = ann.expect("message")
            assert last["text"] == "said on two"
        assert ann.expect("leave")["user"]["name"] == "bob"
        status, _, body = two.get(f"/api/rooms?room={r}")  # a room with no one on `two`, named
        assert {"room": r, "members": 1, "messages": 2, "last": last["id"]} in json.loads(body)["rooms"]
        with Client(two, r, "carl") as carl:
            assert [m["id"] for m in carl.expect("welcome")["members"] if m["name"] == "ann"] == [ann_id]


def test_a_dead_servers_clients_leave_presence_in_bounded_time(make_server, make_redis) -> None:
    # A Redis of its own: an earlier test's killed worker may hold the sweeper's lease on the
    # session's for two of its beats.
    env = {"REDIS_URL": make_redis().url, "PRESENCE_TTL": "1.5"}
    doomed, alive = make_server(env), make_server(env)
    r = room()
    with Client(doomed, r, "ghost") as ghost, Client(alive, r, "watcher") as watcher:
        ghost.expect("welcome")
        watcher.expect("welcome")
        worker = doomed.health()["pid"]
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        doomed.proc.kill()
        left = watcher.expect("leave", timeout=10)
        assert left["user"]["name"] == "ghost"
        assert time.monotonic() - killed < 1.5 + 1.0  # PRESENCE_TTL, and some slack for a busy machine
        with Client(alive, r, "late") as late:
            assert {m["name"] for m in late.expect("welcome")["members"]} == {"watcher", "late"}


def test_redis_outage_degrades_then_recovers(make_server, make_redis) -> None:
    redis = make_redis()
    env = {"REDIS_URL": redis.url}
    one, two = make_server(env), make_server(env)
    r = room()
    with Client(one, r, "stays") as stays:
        stays.expect("welcome")
        stays.say("before")
        before = stays.expect("message")
        redis.stop()
        degraded = stays.expect("error", timeout=10)
        assert degraded["code"] == "degraded"
        wait_for(lambda: healthz(one)[0] == 503, what="/healthz 503")
        stays.say("during")
        assert stays.expect("error")["code"] == "unavailable"  # the connection stays
        with Client(two, r, "newcomer") as newcomer:
            code, _reason, events = newcomer.closed()
            assert code == 1013 and events[-1]["code"] == "unavailable"
        redis = make_redis(port=redis.port)  # back, with its data
        code, _reason, events = stays.closed(timeout=15)
        assert code == 1012 and events[-1]["code"] == "resync"
    wait_for(lambda: healthz(one)[0] == 200 and healthz(two)[0] == 200, what="/healthz 200")
    with Client(two, r, "other") as other:
        other.expect("welcome")
        other.say("after")
        after = other.expect("message")
    with Client(one, r, "stays", since=before["id"]) as back:
        welcome = back.expect("welcome")
        assert welcome["history"] == [after] and welcome["truncated"] is False


def test_several_workers_need_redis_but_not_with_it(make_server, redis_server) -> None:
    server = make_server({"REDIS_URL": redis_server.url, "WEB_CONCURRENCY": "2"})
    wait_for(lambda: server.log().count("Booting worker") == 2, what="two workers")
    assert "ignored" not in server.log()


def self_signed(folder) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, as a managed Redis may present."""
    require(shutil.which("openssl") is not None, "openssl (apt-get install openssl)")
    cert, key = folder / "redis.crt", folder / "redis.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


def test_rediss_with_a_self_signed_chain_needs_the_option(make_server, make_redis, tmp_path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    tls = ("--port", "0", "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key)
    tls += ("--tls-ca-cert-file", cert, "--tls-auth-clients", "no")
    redis = make_redis(port=port, tls=tls)
    url = f"rediss://127.0.0.1:{port}/0"
    refused = make_server({"REDIS_URL": url}, ready=503)  # verifying the chain, as by default
    assert healthz(refused)[1]["status"] == "degraded"
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in refused.log(), what="the verification failure logged")
    server = make_server({"REDIS_URL": url, "REDIS_TLS_VERIFY": "0"})
    with Client(server, room(), "secure") as client:
        client.expect("welcome")
        client.say("over TLS")
        assert client.expect("message")["text"] == "over TLS"
    assert redis.port == port


def test_a_stranger_on_the_channel_disturbs_nobody(make_server, redis_server) -> None:
    import redis

    server = make_server({"REDIS_URL": redis_server.url})
    r = room()
    with Client(server, r, "calm") as calm:
        calm.expect("welcome")
        client = redis.Redis.from_url(redis_server.url)
        for junk in (b"no newlines", b"not-a-number\n{}", b"\xff\xfe\n{}"):
            client.publish(f"chat:{{{r}}}:events", junk)
        client.close()
        calm.say("still fine")
        assert calm.expect("message")["text"] == "still fine"
        assert [e for e in calm.pending if e["type"] == "error"] == []
    assert "dropped a malformed message" in server.log()


def test_a_connect_burst_on_redis_is_welcomed_whole(make_server, redis_server) -> None:
    """More clients at once than redis-py's default pool has connections (100): they wait
    for one, none is refused with `unavailable`."""
    server = make_server({"REDIS_URL": redis_server.url, "MAX_CONNECTIONS_PER_IP": "0"})
    r = room()

    def first_event(i: int) -> str:
        raw = RawClient(server, f"/ws?room={r}&name=b{i}")
        try:
            return json.loads(raw.read_frame()[1].decode().split("\n")[0])["type"]
        finally:
            raw.close()

    with ThreadPoolExecutor(max_workers=200) as pool:
        firsts = list(pool.map(first_event, range(300), timeout=60))
    assert firsts.count("welcome") == 300, {kind: firsts.count(kind) for kind in set(firsts)}


def test_a_room_that_grows_big_on_another_server_is_counted_here_too(make_server, make_redis) -> None:
    """The count comes from presence's sweeper (one worker of all, each beat), through every
    worker: a Redis of its own, so that no lease of an earlier test's killed worker delays it."""
    env = {"REDIS_URL": make_redis().url, "MAX_CONNECTIONS_PER_IP": "0", "PRESENCE_TTL": "2"}
    one, two = make_server(env), make_server(env)
    r = room()
    with Client(one, r, "watcher") as watcher:
        watcher.expect("welcome")
        crowd = [RawClient(two, f"/ws?room={r}&name=m{i}") for i in range(110)]
        try:
            for member in crowd:
                assert b'"type":"welcome"' in member.read_frame()[1]
            # `one` never saw the room pass 100 at a connect: the sweeper's count tells it
            assert watcher.expect("presence", timeout=10)["member_count"] == 111
        finally:
            for member in crowd:
                member.close()


def test_a_redis_that_comes_back_empty_is_a_reset_not_a_silence(make_server, make_redis) -> None:
    """Ids start at 1 again in an empty Redis: a client resuming with the old `since` is told
    `reset` (its epoch is not the room's) and is shown what is said from then on."""
    redis = make_redis()
    server = make_server({"REDIS_URL": redis.url})
    r = room()
    with Client(server, r, "stays") as stays:
        welcome = stays.expect("welcome")
        for n in range(5):
            stays.say(f"old {n}")
        last = [stays.expect("message") for _ in range(5)][-1]
        redis.stop()
        shutil.rmtree(redis.folder)  # its data gone: it comes back empty
        redis = make_redis(port=redis.port)
        code, _reason, _events = stays.closed(timeout=15)
        assert code == 1012
    with Client(server, r, "stays", since=last["id"], epoch=welcome["epoch"]) as back:
        again = back.expect("welcome")
        assert again["reset"] is True and again["truncated"] is True and again["history"] == []
        assert again["epoch"] != welcome["epoch"]
        with Client(server, r, "other") as other:
            other.expect("welcome")
            other.say("new 1")
        assert back.expect("message", text="new 1")["id"] == "1"  # shown, though below since


def test_a_hung_redis_is_told_like_a_dead_one_and_nothing_is_lost(make_server, make_redis) -> None:
    """Redis stopped with SIGSTOP: its connections stay open and say nothing. Within seconds
    /healthz is 503 and clients are told `degraded`; a message sent meanwhile is refused with
    its cid; once Redis answers, clients get `resync` (1012), resume, and the resend is stored
    once."""
    redis = make_redis()
    env = {"REDIS_URL": redis.url}
    one, two = make_server(env), make_server(env)
    r = room()
    key = "sender-" + secrets.token_hex(8)  # the page's: its cids are its own across reconnects
    with Client(one, r, "sender", key=key) as sender, Client(two, r, "watcher") as watcher:
        welcome = sender.expect("welcome")
        watcher.expect("welcome")
        sender.say("before")
        before = sender.expect("message")
        watcher.expect("message", text="before")
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            for client in (sender, watcher):
                assert client.expect("error", timeout=10)["code"] == "degraded"
            wait_for(lambda: healthz(one)[0] == 503 and healthz(two)[0] == 503, 10, "/healthz 503 on both")
            sender.say("during", cid="during-1")
            refused = sender.expect("error", timeout=15)
            assert refused["code"] == "unavailable" and refused["cid"] == "during-1"
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        for client in (sender, watcher):
            code, _reason, events = client.closed(timeout=15)
            assert code == 1012 and events[-1]["code"] == "resync"
    wait_for(lambda: healthz(one)[0] == 200 and healthz(two)[0] == 200, 15, "/healthz 200 on both")
    since = {"since": before["id"], "epoch": welcome["epoch"]}
    with Client(one, r, "sender", key=key, **since) as sender, Client(two, r, "watcher", **since) as watcher:
        sender.expect("welcome")
        watcher.expect("welcome")
        sender.say("during", cid="during-1")  # as the page resends what was refused
        sender.say("after")
        for client in (sender, watcher):
            shown = [e for e in client.pending if e["type"] == "message"]  # history of the welcome
            while not shown or shown[-1]["text"] != "after":
                shown.append(client.expect("message"))
            assert [m["text"] for m in shown] == ["during", "after"]
    assert [m["text"] for m in stored(one, r)] == ["before", "during", "after"]


def test_a_stall_longer_than_presence_ttl_makes_no_one_leave(make_server, make_redis) -> None:
    """A Redis stall as long as PRESENCE_TTL: the deadlines of everyone's presence pass while no
    one can renew them. Nobody still connected may be announced as gone; a worker that really
    died meanwhile still is. And an entry that is taken out wrongly comes back, with a `join`."""
    import redis as redis_py

    redis = make_redis()
    env = {"REDIS_URL": redis.url, "PRESENCE_TTL": "1.5"}
    one, two, doomed = make_server(env), make_server(env), make_server(env)
    r = room()
    with Client(one, r, "ann") as ann, Client(two, r, "bob") as bob, Client(doomed, r, "ghost") as ghost:
        for client in (ann, bob, ghost):
            client.expect("welcome")
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            os.kill(doomed.health()["pid"], signal.SIGKILL)  # a real death while Redis is stalled
            doomed.proc.kill()
            time.sleep(2.2)  # the stall itself: longer than PRESENCE_TTL, shorter than a hang
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        told: dict[Client, list[dict]] = {ann: [], bob: []}  # all they are told from here on

        def read_until(watcher: Client, done: Callable[[dict], bool]) -> None:
            told[watcher].append(watcher.next(timeout=10))
            while not done(told[watcher][-1]):
                told[watcher].append(watcher.next(timeout=10))

        for watcher in told:
            read_until(watcher, lambda e: e["type"] == "leave" and e["user"]["name"] == "ghost")
        ann.say("sentinel")  # after ghost's leave: a sweep that took others too has told it by now
        for watcher, events in told.items():
            read_until(watcher, lambda e: e["type"] == "message")
            wrong = [e["user"]["name"] for e in events if e["type"] == "leave" and e["user"]["name"] != "ghost"]
            assert wrong == [], f"told {wrong} left, though connected"
            assert not [e for e in events if e["type"] == "error"], events
        client = redis_py.Redis.from_url(redis.url)
        client.delete(f"chat:{{{r}}}:presence")  # taken out wrongly (as a bad sweep would)
        client.close()
        back = {bob.expect("join", timeout=5)["user"]["name"], bob.expect("join", timeout=5)["user"]["name"]}
        assert back == {"ann", "bob"}
        with Client(one, r, "late") as late:
            assert {m["name"] for m in late.expect("welcome")["members"]} == {"ann", "bob", "late"}


def test_a_worker_that_starts_listening_to_a_busy_room_misses_nothing(make_server, redis_server) -> None:
    """A channel per room: a worker subscribes to a room when its first client there joins,
    here while messages stream in from another server. The joiner is shown history, then live
    events: every message from its first on, once and in order, with no gap at the seam."""
    env = {"REDIS_URL": redis_server.url, "RATE_LIMIT": "100000", "MAX_CONNECTIONS_PER_IP": "0"}
    one, two = make_server(env), make_server(env)
    for k in range(12):
        r = room()
        with Client(one, r, "sender") as sender:
            sender.expect("welcome")
            stream = threading.Thread(target=lambda: [sender.say(f"m{n}") for n in range(200)] + [sender.say("end")])
            stream.start()
            with Client(two, r, "joiner") as joiner:  # the room is new on `two`: it subscribes now
                shown = joiner.expect("welcome")["history"]
                while not shown or shown[-1]["text"] != "end":
                    shown.append(joiner.expect("message"))
            stream.join(10)
        ids, kept = [int(m["id"]) for m in shown], [int(m["id"]) for m in stored(one, r)]
        assert ids == kept[kept.index(ids[0]) :], f"round {k}: a gap or a repeat at the seam"
