"""The rooms listing behind /api/rooms: bounded, whatever the number of rooms, and exact for
the rooms a caller names."""

from __future__ import annotations

import time

import pytest

from chatapp.config import Config
from chatapp.listing import LISTED, Listing
from chatapp.realtime import Realtime
from chatapp.store import append
from chatapp.store.sqlite import SQLiteStore
from tests.unit.fakes import listener


@pytest.fixture
def rt() -> Realtime:
    rt = Realtime(Config())
    rt.start()
    return rt


def test_the_busiest_rooms_are_listed_and_no_more(rt: Realtime, tmp_path) -> None:
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), 100)
    for n in range(LISTED + 20):
        listener(rt, f"one-{n}", f"room-{n:03d}")
    for name in ("ann", "bob", "cy"):
        listener(rt, name, "busy")
    said, _ = append(store, "busy", {"ts": time.time(), "user": {"id": "ann", "name": "ann"}, "text": "hi"})
    listed = Listing(rt, store).rooms([])
    assert len(listed) == LISTED  # not every room
    assert {"room": "busy", "members": 3, "messages": 1, "last": said["id"]} in listed
    store.close()


def test_a_named_room_is_counted_now_and_a_new_room_here_is_listed_at_once(rt: Realtime, tmp_path) -> None:
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), 100)
    listing = Listing(rt, store)
    listener(rt, "ann", "here")
    assert listing.rooms([]) == [{"room": "here", "members": 1, "messages": 0, "last": "0"}]
    listener(rt, "bob", "new")  # a room more: the listing is counted again, not reused
    assert [r["room"] for r in listing.rooms([])] == ["here", "new"]
    listener(rt, "cy", "here")  # the same rooms: the listing's counts are reused ...
    assert listing.rooms([]) == [
        {"room": "here", "members": 1, "messages": 0, "last": "0"},
        {"room": "new", "members": 1, "messages": 0, "last": "0"},
    ]
    here = listing.rooms(["here"])  # ... but not a named room's
    assert {"room": "here", "members": 2, "messages": 0, "last": "0"} in here
    assert listing.rooms(["nobody-here"]) == listing.rooms([])  # a named room without people or messages is not listed
    store.close()


def test_a_named_room_without_people_is_listed_with_its_newest_message(rt: Realtime, tmp_path) -> None:
    """So that a page can tell that a recent room was written in by people who have gone since."""
    store = SQLiteStore(str(tmp_path / "chat.sqlite3"), 100)
    for text in ("one", "two"):
        said, _ = append(store, "quiet", {"ts": time.time(), "user": {"id": "ann", "name": "ann"}, "text": text})
    listing = Listing(rt, store)
    assert listing.rooms([]) == []  # not among this worker's rooms with people
    assert listing.rooms(["quiet"]) == [{"room": "quiet", "members": 0, "messages": 2, "last": said["id"]}]
    store.close()
