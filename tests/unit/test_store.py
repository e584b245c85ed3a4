"""The SQLite store on a real file in a temporary folder."""

from __future__ import annotations

import time

import pytest

from chatapp.store import PRUNE_EVERY, SQLiteStore


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), history_limit=100)
    yield store
    store.close()


def post(store: SQLiteStore, room: str, text: str, cid: str | None = None):
    fields = {"ts": time.time(), "user": {"id": "c1", "name": "ann"}, "text": text}
    if cid is not None:
        fields["cid"] = cid
    return store.append(room, fields)


def test_ids_are_strings_increasing_within_a_room(store: SQLiteStore) -> None:
    ids = [int(post(store, "r", f"m{n}")[0]["id"]) for n in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [m["text"] for m in store.recent("r", 3)] == ["m2", "m3", "m4"]
    message = store.recent("r", 1)[0]
    assert message == {
        "type": "message",
        "id": message["id"],
        "room": "r",
        "user": {"id": "c1", "name": "ann"},
        "text": "m4",
        "ts": message["ts"],
    }


def test_after_gives_exactly_what_follows_and_says_when_since_is_unknown(store: SQLiteStore) -> None:
    ids = [post(store, "r", f"m{n}")[0]["id"] for n in range(6)]
    post(store, "elsewhere", "x")
    messages, unknown = store.after("r", int(ids[2]))
    assert [m["id"] for m in messages] == ids[3:] and unknown is False
    assert store.after("r", int(ids[2]), limit=2)[0] == messages[:2]
    assert store.after("r", int(ids[-1])) == ([], False)
    assert store.after("r", 999999)[1] is True
    assert store.after("elsewhere", int(ids[0]))[1] is True  # an id of another room


def test_a_cid_the_room_holds_is_not_stored_again(store: SQLiteStore) -> None:
    first, created = post(store, "r", "once", cid="k1")
    again, created_again = post(store, "r", "once (resent)", cid="k1")
    assert created and not created_again and again == first
    assert post(store, "other", "same cid, other room", cid="k1")[1] is True
    assert [m["text"] for m in store.recent("r", 10)] == ["once"]


def test_rooms_are_pruned_to_the_history_limit(tmp_path) -> None:
    store = SQLiteStore(str(tmp_path / "small.sqlite3"), history_limit=5)
    ids = [post(store, "r", f"m{n}")[0]["id"] for n in range(23)]
    kept = [m["id"] for m in store.recent("r", 100)]
    assert 5 <= len(kept) < 5 + min(PRUNE_EVERY, 5) and kept == ids[-len(kept) :]
    assert store.after("r", int(ids[0]))[1] is True  # pruned: unknown
    assert store.counts(["r", "empty"]) == {"r": len(kept)}


def test_two_connections_to_one_file_share_ids_and_history(tmp_path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    one, two = SQLiteStore(path, 100), SQLiteStore(path, 100)
    for n in range(10):
        post(one if n % 2 else two, "r", f"m{n}")
    texts = [m["text"] for m in one.recent("r", 100)]
    assert texts == [f"m{n}" for n in range(10)] == [m["text"] for m in two.recent("r", 100)]


def test_history_survives_reopening(tmp_path) -> None:
    path = str(tmp_path / "kept.sqlite3")
    store = SQLiteStore(path, 100)
    stored = post(store, "r", "still here")[0]
    store.close()
    assert SQLiteStore(path, 100).recent("r", 10) == [stored]
