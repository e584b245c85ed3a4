"""The stores, one body of tests run on each backend: SQLite on a real file in a temporary
folder, Redis on a real redis-server and on a real Redis Cluster (the session's; each test
uses its own rooms)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import pytest

from chatapp.store import Store, append, recent
from chatapp.store.sqlite import PRUNE_EVERY, SQLiteStore
from tests.cluster import close


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def open_store(request, tmp_path) -> Callable[..., Store]:
    """Open a store (again) on the same backend and data: open_store(history_limit=...)."""
    opened: list = []

    def open_(history_limit: int = 100, idle: float = 0) -> Store:
        if request.param == "sqlite":
            store = SQLiteStore(str(tmp_path / "chat.sqlite3"), history_limit, idle)
        else:
            import redis

            from chatapp.store.redis import RedisStore

            if request.param == "cluster":
                client = redis.RedisCluster.from_url(request.getfixturevalue("redis_cluster").url)
            else:
                client = redis.Redis.from_url(request.getfixturevalue("redis_server").url)
            opened.append(client)
            return RedisStore(client, history_limit, idle=idle)
        opened.append(store)
        return store

    yield open_
    for thing in opened:
        close(thing) if hasattr(thing, "connection_pool") or hasattr(thing, "nodes_manager") else thing.close()


@pytest.fixture
def store(open_store) -> Store:
    return open_store()


@pytest.fixture
def r() -> str:
    """A room of this test's own (the Redis store is shared by the session)."""
    return "s-" + secrets.token_hex(4)


def post(store: Store, room: str, text: str, cid: str | None = None):
    fields = {"ts": time.time(), "user": {"id": "c1", "name": "ann"}, "text": text}
    if cid is not None:
        fields["cid"] = cid
    return append(store, room, fields)


def test_a_read_holds_at_most_read_bytes_and_says_more(open_store, r: str) -> None:
    """150 messages of 2,000 characters (330 KB of JSON): the last ones that fit in READ_BYTES
    (of the last `limit`, or of all after `since`), or the first of a page after `since`, and
    `more`; paging on from a page's last one gets the rest."""
    store = open_store(history_limit=1000)
    user = {"id": "c1", "name": "ann"}
    items = [(r, {"ts": time.time(), "user": user, "text": f"{n:03d}" + "x" * 1997}) for n in range(150)]
    stored = [message for message, _new in store.append_many(items)]
    texts = [message["text"] for message in stored]
    last = store.read(r, None, None, 500)
    assert last.more is True and 100 < len(last.messages) < 150
    assert [m["text"] for m in last.messages] == texts[-len(last.messages) :]
    caught_up = store.read(r, int(stored[0]["id"]), last.epoch, 500)  # a resume: all after it, the newest that fit
    assert caught_up.more is True and caught_up.messages == last.messages
    paged, since = [], 0
    while True:  # as a client pages the API from the start
        page = store.read(r, since, last.epoch, 500, page=500)
        paged += [m["text"] for m in page.messages]
        if not page.more:
            break
        assert 100 < len(page.messages) < 150
        since = int(page.messages[-1]["id"])
    assert paged == texts
    assert store.read(r, None, None, 10).more is False


def test_ids_are_strings_increasing_within_a_room(store: Store, r: str) -> None:
    ids = [int(post(store, r, f"m{n}")[0]["id"]) for n in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [m["text"] for m in recent(store, r, 3)] == ["m2", "m3", "m4"]
    message = recent(store, r, 1)[0]
    assert message == {
        "type": "message",
        "id": message["id"],
        "room": r,
        "user": {"id": "c1", "name": "ann"},
        "text": "m4",
        "ts": message["ts"],
    }
    assert post(store, r, "with cid", cid="k")[0]["cid"] == "k"


def after(store: Store, room: str, since: int, page: int = -1) -> tuple[list, bool]:
    """The messages after `since`, and whether it was unknown (then the last 3 instead)."""
    found = store.read(room, since, None, 3, None if page == -1 else page)
    return found.messages, found.truncated


def test_read_gives_exactly_what_follows_and_says_when_since_is_unknown(store: Store, r: str) -> None:
    ids = [post(store, r, f"m{n}")[0]["id"] for n in range(6)]
    post(store, r + "-other", "x")
    messages, unknown = after(store, r, int(ids[2]))
    assert [m["id"] for m in messages] == ids[3:] and unknown is False
    assert after(store, r, int(ids[2]), page=2)[0] == messages[:2]
    assert after(store, r, int(ids[-1])) == ([], False)
    assert after(store, r + "-other", int(ids[3]))[1] is True  # an id only another room has
    found = store.read(r, None, None, 2)
    assert [m["id"] for m in found.messages] == ids[-2:] and not found.truncated and not found.reset


def test_a_since_this_store_cannot_have_given_is_a_reset(store: Store, r: str) -> None:
    """A `since` of another epoch (the store lost its data, and ids start again) or beyond the
    last id given (it lost its newest) must not be taken for one of this store's ids."""
    ids = [post(store, r, f"m{n}")[0]["id"] for n in range(3)]
    epoch = store.read(r, None, None, 0).epoch
    assert store.read(r, None, None, 0).epoch == epoch  # stable
    same = store.read(r, int(ids[0]), epoch, 10)
    assert [m["id"] for m in same.messages] == ids[1:] and not same.truncated and not same.reset
    for since, given in ((int(ids[0]), "0ther" if epoch != "0ther" else "1ther"), (int(ids[-1]) + 10**9, epoch)):
        found = store.read(r, since, given, 2)
        assert found.truncated and found.reset and [m["id"] for m in found.messages] == ids[-2:]
    assert not store.read(r, int(ids[0]), None, 2).reset  # no epoch given: the id alone is checked


def test_a_cid_the_room_holds_is_not_stored_again(store: Store, r: str) -> None:
    first, created = post(store, r, "once", cid="k1")
    again, created_again = post(store, r, "once (resent)", cid="k1")
    assert created and not created_again and again == first
    assert post(store, r + "-other", "same cid, other room", cid="k1")[1] is True
    assert [m["text"] for m in recent(store, r, 10)] == ["once"]


def test_a_cid_is_the_senders(store: Store, r: str) -> None:
    """Another sender with the same cid is another message: it neither suppresses the first
    sender's nor gets it back as its ack. A sender is its uid, or its id without one."""
    user = {"ts": time.time(), "text": "mine"}
    ann, ann_again = {"id": "c1", "name": "ann", "uid": "u-ann"}, {"id": "c9", "name": "ann", "uid": "u-ann"}
    first, created = append(store, r, {**user, "user": ann, "cid": "k"})
    other, other_created = append(
        store, r, {**user, "text": "not yours", "user": {"id": "c2", "name": "eve"}, "cid": "k"}
    )
    again, again_created = append(store, r, {**user, "user": ann_again, "cid": "k"})  # ann, reconnected
    assert created and other_created and not again_created
    assert other["id"] != first["id"] and again == first and first["user"] == ann
    assert [m["text"] for m in recent(store, r, 10)] == ["mine", "not yours"]


def test_rooms_are_pruned_to_the_history_limit(open_store, r: str) -> None:
    store = open_store(history_limit=5)
    ids = [post(store, r, f"m{n}", cid=f"k{n}")[0]["id"] for n in range(23)]
    kept = [m["id"] for m in recent(store, r, 100)]
    assert 5 <= len(kept) < 5 + min(PRUNE_EVERY, 5) and kept == ids[-len(kept) :]
    assert after(store, r, int(ids[0]))[1] is True  # pruned: unknown
    assert store.counts([r, r + "-empty"]) == {r: (len(kept), int(ids[-1]))}
    assert post(store, r, "m0 again", cid="k0")[1] is True  # its cid went with it


def test_a_room_idle_for_longer_than_idle_loses_its_history(open_store, r: str) -> None:
    """Rooms nobody uses any more do not keep their history forever (HISTORY_IDLE_DAYS), and a
    room used again starts under a new epoch: its old ids cannot be taken for new ones."""
    store = open_store(idle=1)
    ids = [post(store, r, f"m{n}")[0]["id"] for n in range(3)]
    epoch = store.read(r, None, None, 10).epoch
    time.sleep(1.2)  # the idle time itself, which is what is tested
    post(store, r + "-busy", "a message elsewhere")  # SQLite looks for idle rooms as it appends
    assert recent(store, r, 10) == []
    assert recent(store, r + "-busy", 10) != []
    again = store.read(r, int(ids[-1]), epoch, 10)
    assert again.truncated  # what the client had is gone
    new = post(store, r, "used again")[0]
    # and no id is taken for another: a new epoch (Redis), or ids that go on (SQLite's are the file's)
    assert (again.reset and again.epoch != epoch) or int(new["id"]) > int(ids[-1])


def test_two_stores_on_the_same_data_share_ids_and_history(open_store, r: str) -> None:
    one, two = open_store(), open_store()
    for n in range(10):
        post(one if n % 2 else two, r, f"m{n}")
    texts = [m["text"] for m in recent(one, r, 100)]
    assert texts == [f"m{n}" for n in range(10)] == [m["text"] for m in recent(two, r, 100)]


def test_no_history_asked_is_none(store: Store, r: str) -> None:
    post(store, r, "m")
    assert recent(store, r, 0) == []


def test_history_survives_reopening(open_store, r: str) -> None:
    store = open_store()
    stored = post(store, r, "still here")[0]
    assert recent(open_store(), r, 10) == [stored]


def test_append_many_stores_in_order_and_knows_a_cid_given_twice(store: Store, r: str) -> None:
    other = r + "-b"
    fields = [{"ts": time.time(), "user": {"id": "c1", "name": "ann"}, "text": t} for t in ("a", "b", "c", "d")]
    fields[1]["cid"] = fields[3]["cid"] = "k1"  # the same cid twice in one batch
    stored = store.append_many([(r, fields[0]), (r, fields[1]), (other, fields[2]), (r, fields[3])])
    assert [(m["text"], m["room"], created) for m, created in stored] == [
        ("a", r, True),
        ("b", r, True),
        ("c", other, True),
        ("b", r, False),  # the resend gets the first one back
    ]
    assert int(stored[0][0]["id"]) < int(stored[1][0]["id"])
    assert [m["text"] for m in recent(store, r, 10)] == ["a", "b"]


def test_a_big_batch_gives_each_message_its_own_id_in_order_and_each_resend_its_first(store: Store, r: str) -> None:
    """100 messages in two rooms (SQLite: four INSERTs of many rows), with cids new, resent
    from an earlier batch, and resent within this one across its INSERTs: each gets back its
    own stored message (its text, its id); the new ones of a room are stored with increasing
    ids in the order of the batch; a resend gets the first one."""
    other = r + "-b"
    user = {"id": "c1", "name": "ann"}
    ((earlier, _),) = store.append_many([(r, {"ts": time.time(), "user": user, "text": "earlier", "cid": "e"})])
    items = []
    for i in range(100):
        room = other if i % 3 == 0 else r
        fields = {"ts": time.time(), "user": user, "text": f"m{i}"}
        if i % 5 == 0:
            fields["cid"] = f"k{i}"
        if i in (40, 90):  # resends of m5 (in the first INSERT) and of the earlier batch's
            fields["cid"], room = "k5" if i == 40 else "e", r
        items.append((room, fields))
    stored = store.append_many(items)
    for i, (message, created) in enumerate(stored):
        if i == 40:
            assert (message["text"], created) == ("m5", False) and message["id"] == stored[5][0]["id"]
        elif i == 90:
            assert (message, created) == (earlier, False)
        else:
            assert (message["text"], message["room"], created) == (f"m{i}", items[i][0], True)
    new = [room for i, (room, _fields) in enumerate(items) if i not in (40, 90)]
    for room in (r, other):
        kept = [m for m, created in stored if created and m["room"] == room]
        ids = [int(m["id"]) for m in kept]
        assert ids == sorted(set(ids)) and len(kept) == new.count(room)
        assert recent(store, room, 200)[-len(kept) :] == kept


def test_a_big_batch_without_cids_gives_each_message_the_id_it_is_stored_under(store: Store, r: str) -> None:
    """100 messages with no cid (a bot's, a terminal's; SQLite: INSERTs without RETURNING, each
    row's id known from the last one's) in two rooms, after messages of a third: each comes back
    as it is read back, its room's ids increasing in the order of the batch."""
    user = {"id": "c1", "name": "ann"}
    store.append_many([(r + "-c", {"ts": time.time(), "user": user, "text": f"x{i}"}) for i in range(7)])
    items = [(r + "-b" if i % 3 == 0 else r, {"ts": time.time(), "user": user, "text": f"m{i}"}) for i in range(100)]
    stored = store.append_many(items)
    assert [(m["text"], m["room"], created) for m, created in stored] == [
        (fields["text"], room, True) for room, fields in items
    ]
    for room in (r, r + "-b"):
        kept = [m for m, _created in stored if m["room"] == room]
        assert [int(m["id"]) for m in kept] == sorted({int(m["id"]) for m in kept})
        assert recent(store, room, 200) == kept


def test_sqlite_a_file_from_before_senders_opens_and_keeps_its_messages(tmp_path) -> None:
    """A file made when cids were the room's (no user_uid or sender, a unique index on room and
    cid) gets the new columns and index when opened, and its messages stay readable."""
    import sqlite3

    path = str(tmp_path / "old.sqlite3")
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL, ts REAL NOT NULL,"
        " user_id TEXT NOT NULL, user_name TEXT NOT NULL, text TEXT NOT NULL, cid TEXT);"
        "CREATE INDEX messages_room_id ON messages (room, id);"
        "CREATE UNIQUE INDEX messages_room_cid ON messages (room, cid);"
        "INSERT INTO messages (room, ts, user_id, user_name, text, cid) VALUES ('r', 1.0, 'c1', 'ann', 'old', 'k');"
    )
    old.close()
    store = SQLiteStore(path, 100)
    assert [(m["text"], m["user"], m["cid"]) for m in recent(store, "r", 10)] == [
        ("old", {"id": "c1", "name": "ann"}, "k")
    ]
    fields = {"ts": time.time(), "text": "new", "cid": "k"}
    assert append(store, "r", {**fields, "user": {"id": "c2", "name": "bob", "uid": "u-bob"}})[1] is True
    assert append(store, "r", {**fields, "user": {"id": "c3", "name": "bob", "uid": "u-bob"}})[1] is False
    store.close()
    assert SQLiteStore(path, 100).read("r", None, None, 10).messages[-1]["user"]["uid"] == "u-bob"  # opens again


def test_sqlite_a_file_with_the_full_cid_index_gets_the_partial_one(tmp_path) -> None:
    """A file made when every message had an entry in the index of cids (NULL ones too) loses
    that index when opened; the partial one (messages with a cid only) keeps one per cid."""
    import sqlite3

    path = str(tmp_path / "full.sqlite3")
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL, ts REAL NOT NULL,"
        " user_id TEXT NOT NULL, user_name TEXT NOT NULL, text TEXT NOT NULL, cid TEXT, user_uid TEXT, sender TEXT);"
        "CREATE INDEX messages_room_id ON messages (room, id);"
        "CREATE UNIQUE INDEX messages_room_sender_cid ON messages (room, sender, cid);"
        "INSERT INTO messages (room, ts, user_id, user_name, text, cid, sender)"
        " VALUES ('r', 1.0, 'c1', 'ann', 'old', 'k', 'c1');"
    )
    old.close()
    store = SQLiteStore(path, 100)
    indexes = dict(
        store._db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")
    )
    assert "messages_room_sender_cid" not in indexes
    assert indexes["messages_room_sender_cid_set"].endswith("WHERE cid IS NOT NULL")
    fields = {"ts": time.time(), "user": {"id": "c1", "name": "ann"}}
    assert append(store, "r", {**fields, "text": "old, again", "cid": "k"})[1] is False
    assert [append(store, "r", {**fields, "text": "no cid"})[1] for _ in range(2)] == [True, True]
    store.close()


def test_sqlite_append_many_is_one_transaction(tmp_path) -> None:
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), 100)
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    fields = {"ts": time.time(), "user": {"id": "c1", "name": "ann"}}
    store.append_many([("r", {**fields, "text": "m", "cid": "k0"})])
    commits.clear()
    resends = [("r", {**fields, "text": "m", "cid": "k0"}), ("r", {**fields, "text": "n", "cid": "k1"})] * 2
    store.append_many([("r", {**fields, "text": f"m{i}"}) for i in range(100)] + resends)
    assert len(commits) == 1  # not one, then (the batch refused) one a message
    store.close()


def test_sqlite_a_resend_of_what_a_prune_in_its_insert_takes_stays_one_transaction(tmp_path) -> None:
    """A batch's prunes come after its resends are looked up: one that took the message a later
    row resends failed the batch, done again a message a transaction (from a helper's review)."""
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), 100)  # pruned every 64 appends
    fields = {"ts": time.time(), "user": {"id": "c1", "name": "ann"}}
    store.append_many([("r", {**fields, "text": f"m{i}", "cid": f"k{i}"}) for i in range(127)])  # 63 since
    ends: list[str] = []
    store._db.set_trace_callback(lambda sql: ends.append(sql) if sql in ("COMMIT", "ROLLBACK") else None)
    stored = store.append_many([("r", {**fields, "text": "new"}), ("r", {**fields, "text": "again", "cid": "k0"})])
    assert [(m["text"], created) for m, created in stored] == [("new", True), ("m0", False)]
    assert ends == ["COMMIT"]
    store.close()


def test_sqlite_a_message_it_refuses_fails_alone_in_a_batch(tmp_path) -> None:
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), 100)
    fields = {"ts": time.time(), "user": {"id": "c1", "name": "ann"}}
    results = store.append_many(
        [("r", {**fields, "text": "one"}), ("r", {**fields, "text": None}), ("r", {**fields, "text": "three"})]
    )
    assert isinstance(results[1], Exception)
    assert [m["text"] for m, _ in (results[0], results[2])] == ["one", "three"]
    assert [m["text"] for m in recent(store, "r", 10)] == ["one", "three"]
    store.close()


def test_sqlite_an_insert_without_cids_that_skips_a_row_gives_no_ids_from_it(tmp_path) -> None:
    """Ids without RETURNING are known from the last row's only when every row went in: a row
    SQLite skips (here a trigger's RAISE(IGNORE)) fails the INSERT, and the batch is stored a
    message at a time, the skipped one refused alone, the others under their own ids."""
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), 100)
    store._db.execute(
        "CREATE TRIGGER skip BEFORE INSERT ON messages WHEN new.text = 'skip' BEGIN SELECT RAISE(IGNORE); END"
    )
    fields = {"ts": time.time(), "user": {"id": "c1", "name": "ann"}}
    results = store.append_many([("r", {**fields, "text": text}) for text in ("one", "skip", "three")])
    assert isinstance(results[1], RuntimeError)
    assert [(m["id"], m["text"]) for m, _created in (results[0], results[2])] == [
        (m["id"], m["text"]) for m in recent(store, "r", 10)
    ]
    assert [m["text"] for m in recent(store, "r", 10)] == ["one", "three"]
    store.close()


def test_cluster_a_batch_is_answered_once_a_replica_has_it(redis_cluster, r: str) -> None:
    """WAIT ends each master's batch: a failover then loses no message its sender was told of."""
    import redis

    from chatapp.store.redis import RedisStore

    client = redis.RedisCluster.from_url(redis_cluster.url)
    store = RedisStore(client, 100)
    waits = lambda: sum(  # noqa: E731
        client.get_redis_connection(node).info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
        for node in client.get_primaries()
    )
    before = waits()
    store.append_many([(r, {"ts": time.time(), "user": {"id": "c1", "name": "ann"}, "text": "hi"})])
    assert waits() == before + 1
    close(client)
