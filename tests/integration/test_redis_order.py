"""Two servers on one Redis (and on a Redis Cluster): every client is shown the room in id order, and a client that
drops and resumes with `since` (as the page does) goes on without a gap or a repeat.

What a client "shows" is modelled on the page: every `message` event it receives, in the
order received (the welcome's `history` first, then live ones), and it resumes with
`since=<the id of the last one shown>`. So if a lower id arrives after a higher one, the
room is shown out of order, and a drop between the two loses the lower one for good (the
resume asks for what is after the higher one): a gap. A welcome that says `more` (it holds
the newest 256 KB of what came since) is completed from the API first, as a client does by
docs/protocol.md (a run of ORDER_MESSAGES=2000 has readers whose backlog is bigger).

ORDER_MESSAGES sets how many messages are sent (default 360); ORDER_SEED replays a run's
drop points (the seed is in every failure message).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.helpers import TIMEOUT, Client, Server, stored

MESSAGES = int(os.environ.get("ORDER_MESSAGES", "360"))
SENDERS = 6  # split over both servers, all sending at once
READERS = 6  # split over both servers; most of them drop and resume at random points
MARKER = "the-end"  # the cid of a last message, sent once every other one is acked
READ_WAIT = 2 * TIMEOUT  # the longest quiet a live connection may have while messages are due


def room() -> str:
    return "o-" + secrets.token_hex(4)


class Shown:
    """What one client has been shown: every message event, in order. Each one is checked
    against what was shown before: a repeat (an id already shown) or an id below the last one
    shown is an error, named precisely."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ids: list[int] = []
        self.cids: dict[int, str | None] = {}
        self.at: dict[int, int] = {}  # id -> its position in `ids`
        self.disorders: list[str] = []  # an id below the last one shown
        self.repeats: list[str] = []  # an id shown before
        self.resumes: list[str] = []  # what each reconnect asked for and got
        self.done = False  # shown the marker: everything published before it has come too

    @property
    def last(self) -> int | None:
        return self.ids[-1] if self.ids else None

    def show(self, message: dict[str, Any], how: str) -> None:
        id_ = int(message["id"])
        where = f"#{len(self.ids) + 1}, {how}"
        if id_ in self.at:
            self.repeats.append(f"{self.name} shown id {id_} again ({where}; first as #{self.at[id_] + 1})")
        elif self.ids and id_ < self.ids[-1]:
            self.disorders.append(f"{self.name} shown id {id_} after {self.ids[-1]} ({where})")
        self.at.setdefault(id_, len(self.ids))
        self.ids.append(id_)
        self.cids[id_] = message.get("cid")
        if message.get("cid") == MARKER:
            self.done = True


def guarded(failures: list[str], name: str, action: Callable[..., None], *args: Any) -> threading.Thread:
    """A started daemon thread running `action`; whatever it raises goes to `failures`."""

    def run() -> None:
        try:
            action(*args)
        except BaseException:  # noqa: B036 -- reported by the test, not lost in a thread
            failures.append(f"{name}: {traceback.format_exc(limit=3)}")

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def next_event(client: Client, shown: Shown, deadline: float) -> dict[str, Any]:
    wait = min(READ_WAIT, deadline - time.monotonic())
    assert wait > 0, f"{shown.name}: out of time after {len(shown.ids)} messages (last id {shown.last})"
    try:
        return client.next(wait)
    except TimeoutError:
        raise AssertionError(
            f"{shown.name}: no event for {wait:.1f} s after {len(shown.ids)} messages (last id {shown.last})"
        ) from None


def read(
    server: Server, r: str, shown: Shown, client: Client, drops: list[int], stop: threading.Event, deadline: float
) -> None:
    """A reader: shows what comes until the marker; after its k-th message for each k in
    `drops`, it drops its connection and resumes with since=<last id shown>. A close by the
    server is a drop too (the page reconnects after one)."""
    clients = [client]
    try:
        while not shown.done and not stop.is_set():
            try:
                event = next_event(client, shown, deadline)
            except ConnectionClosed as exc:
                shown.resumes.append(f"closed by the server ({exc}) after id {shown.last}")
            else:
                if event["type"] == "message":
                    shown.show(event, "live")
                if not (drops and len(shown.ids) >= drops[0]) or shown.done:
                    continue
                while drops and len(shown.ids) >= drops[0]:
                    drops.pop(0)
                client.__exit__()
            if stop.is_set():
                return
            since = shown.last
            client = Client(server, r, shown.name, **({} if since is None else {"since": str(since)}))
            clients.append(client)
            welcome = next_event(client, shown, deadline)
            assert welcome["type"] == "welcome", f"{shown.name}: first event {welcome}"
            history = welcome["history"]
            if welcome["more"]:  # the welcome holds the newest part: the rest is paged from the API
                history = paged(server, r, since, int(history[0]["id"])) + history
            shown.resumes.append(
                f"since={since}: history {len(history)}"
                + (f" ({history[0]['id']}..{history[-1]['id']})" if history else "")
                + (", truncated" if welcome["truncated"] else "")
                + (f", more: {len(history) - len(welcome['history'])} paged" if welcome["more"] else "")
            )
            assert not welcome["truncated"], f"{shown.name}: since={since} not kept (HISTORY_LIMIT too low?)"
            for message in history:
                shown.show(message, f"history since={since}")
    finally:
        for c in clients:
            c.__exit__()


def paged(server: Server, r: str, since: int | None, below: int) -> list[dict[str, Any]]:
    """The stored messages after `since` and below id `below`, oldest first, page by page."""
    messages: list[dict[str, Any]] = []
    while True:
        after = messages[-1]["id"] if messages else since
        status, _, body = server.get(f"/api/rooms/{r}/messages?limit=500&since={after}")
        assert status == 200, body
        found = json.loads(body)["messages"]
        messages += [m for m in found if int(m["id"]) < below]
        if not found or int(found[-1]["id"]) >= below:
            return messages


def send(sender: Client, name: str, count: int, start: threading.Barrier) -> None:
    start.wait(TIMEOUT)
    for k in range(count):  # all at once: both servers' posters store and emit big batches together
        sender.say(f"{name} {k}", cid=f"{name}-{k}")


def drain(
    sender: Client, shown: Shown, acked: dict[str, int], count: int, all_acked: threading.Event, deadline: float
) -> None:
    """A sender's own stream: checked like a reader's (it never drops); its own messages,
    coming back, are its acks."""
    own = f"{shown.name}-"
    while not shown.done:
        event = next_event(sender, shown, deadline)
        if event["type"] == "error":
            raise AssertionError(f"{shown.name}: {event}")
        if event["type"] != "message":
            continue
        shown.show(event, "live")
        cid = event.get("cid") or ""
        if cid.startswith(own):
            acked[cid] = int(event["id"])
            if len(acked) == count:
                all_acked.set()


def verdict(shown: Shown, expected: list[int], cid_of: dict[int, str]) -> list[str]:
    """What is wrong with what `shown` was shown, against every stored id in order: a summary
    line, then the first few of each kind."""
    missing = sorted(set(expected) - set(shown.ids))
    if not (shown.disorders or shown.repeats or missing) and shown.ids == expected:
        return []
    problems = [
        f"{shown.name}: {len(shown.disorders)} out of order, {len(shown.repeats)} repeated, {len(missing)} never shown"
        + (f"; resumes: {'; '.join(shown.resumes)}" if shown.resumes else "")
    ]
    problems += shown.disorders[:2] + shown.repeats[:2]
    if missing:
        problems.append(f"{shown.name} never shown {len(missing)} ids (a gap): {missing[:10]}")
    unknown = sorted(set(shown.ids) - set(expected))
    if unknown:
        problems.append(f"{shown.name} shown ids that are not stored: {unknown[:10]}")
    wrong = [i for i in shown.ids if i in cid_of and shown.cids[i] != cid_of[i]]
    if wrong:
        problems.append(f"{shown.name} shown ids with another message than stored: {wrong[:10]}")
    if len(problems) == 1:  # nothing else can differ; a last guard
        problems.append(f"{shown.name} shown {len(shown.ids)} ids, not the {len(expected)} stored in order")
    return problems


def test_every_client_sees_the_room_in_id_order_and_resumes_without_gap_or_repeat(make_server, redis_env) -> None:
    """Six senders on two servers send at once; six readers (and the senders) check each
    message as it is shown; four readers drop at random points and resume with since. At the
    end each must have been shown exactly the stored messages, each once, in id order."""
    seed = int(os.environ.get("ORDER_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    print(f"ORDER_SEED={seed} ORDER_MESSAGES={MESSAGES}")
    env = {
        **redis_env,
        "RATE_LIMIT": "100000",
        "MAX_CONNECTIONS_PER_IP": "0",
        "WEB_CONCURRENCY": "1",  # one poster per server: two posters in all
        "HISTORY_LIMIT": str(max(1000, MESSAGES + 100)),  # every resume point stays kept
    }
    one, two = make_server(env), make_server(env)
    r = room()
    deadline = time.monotonic() + 20 + MESSAGES / 50
    counts = [MESSAGES // SENDERS + (1 if n < MESSAGES % SENDERS else 0) for n in range(SENDERS)]
    failures: list[str] = []
    stop = threading.Event()
    clients: list[Client] = []
    threads: list[threading.Thread] = []
    try:
        readers: list[tuple[Server, Shown, Client, list[int]]] = []
        for n in range(READERS):
            server = (one, two)[n % 2]
            shown = Shown(f"r{n}")
            client = Client(server, r, shown.name)
            clients.append(client)
            assert client.expect("welcome")["history"] == []
            # all but one reader on each server drop 1 to 3 times, after a random count shown
            drops = [] if n < 2 else sorted(rng.sample(range(1, MESSAGES), rng.randint(1, 3)))
            readers.append((server, shown, client, drops))
        senders: list[tuple[Shown, Client, dict[str, int], threading.Event]] = []
        for n in range(SENDERS):
            shown = Shown(f"s{n}")
            client = Client((one, two)[n % 2], r, shown.name)
            clients.append(client)
            client.expect("welcome")
            senders.append((shown, client, {}, threading.Event()))
        plan = {shown.name: drops for _, shown, _, drops in readers if drops}
        print(f"servers {one.port} {two.port}, room {r}, drops after k messages shown: {plan}")

        for server, shown, client, drops in readers:
            threads.append(guarded(failures, shown.name, read, server, r, shown, client, list(drops), stop, deadline))
        start = threading.Barrier(SENDERS, timeout=TIMEOUT)
        for (shown, client, acked, all_acked), count in zip(senders, counts, strict=True):
            threads.append(guarded(failures, shown.name, drain, client, shown, acked, count, all_acked, deadline))
            threads.append(guarded(failures, f"{shown.name} send", send, client, shown.name, count, start))
        for shown, _, acked, all_acked in senders:
            assert all_acked.wait(max(deadline - time.monotonic(), 0)), (
                f"seed {seed}: {shown.name} got {len(acked)} acks of {counts[int(shown.name[1:])]}; {failures}"
            )
        senders[0][1].say("everything is acked", cid=MARKER)  # published after every other message
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        assert not failures, f"seed {seed}:\n" + "\n".join(failures)
        assert not [t.name for t in threads if t.is_alive()], f"seed {seed}: threads still running"

        kept = stored(one, r)
        expected = [int(m["id"]) for m in kept]
        cid_of = {int(m["id"]): m.get("cid") for m in kept}
        acks = {cid: id_ for _, _, acked, _ in senders for cid, id_ in acked.items()}
        assert expected == sorted(set(expected)) and len(expected) == MESSAGES + 1, f"stored: {len(expected)}"
        assert {cid_of[i]: i for i in expected if cid_of[i] != MARKER} == acks, "the store and the acks differ"

        shown_all = [shown for _, shown, _, _ in readers] + [shown for shown, _, _, _ in senders]
        problems = {shown.name: verdict(shown, expected, cid_of) for shown in shown_all}
        for shown in shown_all:  # with -s: what each client went through
            print(f"{shown.name}: shown {len(shown.ids)}; resumes: {'; '.join(shown.resumes) or 'none'}")
        bad = {name: p for name, p in problems.items() if p}
        if bad:
            lines = [f"seed {seed} (ORDER_SEED={seed}): {len(bad)} of {len(shown_all)} clients were not shown "
                     f"the {len(expected)} stored messages each once in id order"]  # fmt: skip
            for shown in shown_all:
                if shown.name in bad:
                    first, *rest = bad[shown.name]
                    lines += [f"  {first}", *(f"      {line}" for line in rest)]
            raise AssertionError("\n".join(lines))
    finally:
        stop.set()
        for client in clients:
            client.__exit__()
        for thread in threads:
            thread.join(TIMEOUT)
