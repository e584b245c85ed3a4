"""Rooms you can see and move between: the whole name in the header, the room list with unread
counts and the rooms where people are, a draft per room."""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest
from playwright.sync_api import expect

from tests.browser.pages import SMALL_PHONE, join_room, open_chat, say
from tests.helpers import Client, Server, wait_for

pytestmark = pytest.mark.browser

LONG = "walk-phone-sync-for-the-q3-plans"  # 32 characters, the longest a room name may be


def test_the_header_shows_the_whole_room_name_on_a_small_phone(new_page, server: Server) -> None:
    page = open_chat(new_page, server, f"/r/{LONG}?name=walker", **SMALL_PHONE)
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text(f"#{LONG}")
    box = heading.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360  # on the screen, all of it
    assert heading.evaluate("h => h.scrollWidth <= h.clientWidth")  # nothing cut off
    expect(page.locator("#status")).to_be_in_viewport()
    expect(page.locator("#members-toggle")).to_be_in_viewport()


def test_the_room_list_counts_unread_messages_in_other_rooms(new_page, server: Server) -> None:
    """Every 30 s the page asks which rooms have people and each recent room's newest message
    (GET /api/rooms), and counts, for each recent room written in since, the messages after the
    last one it showed there."""
    with ExitStack() as stack:
        talker = stack.enter_context(Client(server, "away-a", "talker"))
        talker.expect("welcome")
        page = open_chat(new_page, server, "/r/away-a?name=walker", clock=True)
        say(page, "see you in b")
        talker.expect("message", text="see you in b")
        with page.expect_response(lambda r: "/api/rooms?" in r.url):  # the poll after a welcome
            join_room(page, "away-b")
        expect(page.locator("#status")).to_have_attribute("data-state", "open")
        other_room = page.locator("#rooms a", has_text="away-a")
        expect(other_room).not_to_contain_text("unread")  # nothing new there yet
        for n in range(3):
            talker.say(f"while you were in b {n}")
        for who in ("x", "y"):  # people in a room the walker has never been to
            stack.enter_context(Client(server, "away-c", who)).expect("welcome")
        page.clock.fast_forward(31_000)  # the next poll
        expect(other_room.locator(".count")).to_have_text("3 unread")
        expect(page.locator("#rooms-unread")).to_be_hidden()  # the drawer's badge: on a phone only
        expect(page.locator("#active-rooms a")).to_have_text(["#away-c2 online"])
        expect(page.get_by_role("heading", name="Active now")).to_be_visible()
        other_room.click()  # back: the count goes, the rule shows where the reader left off
        expect(page.locator("#log .msg:not(.pending) .body, #log .rule.new")).to_have_text(
            ["see you in b", "New messages", "while you were in b 0", "while you were in b 1", "while you were in b 2"]
        )
        expect(other_room).not_to_contain_text("unread")
        expect(page.locator("#rooms a", has_text="away-b")).not_to_contain_text("unread")


def test_a_draft_stays_with_its_room(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/draft-a?name=writer")
    page.fill("#text", "half a thought for a")
    join_room(page, "draft-b")
    expect(page.locator("#text")).to_have_value("")  # it did not follow
    page.fill("#text", "something for b")
    page.locator("#rooms a", has_text="draft-a").click()
    expect(page.locator("#text")).to_have_value("half a thought for a")
    page.reload()  # kept across visits too
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#text")).to_have_value("half a thought for a")
    page.press("#text", "Enter")  # sent: the draft is gone
    expect(page.locator("#log .msg:not(.pending) .body")).to_have_text(["half a thought for a"])
    page.locator("#rooms a", has_text="draft-b").click()
    expect(page.locator("#text")).to_have_value("something for b")
    page.go_back()
    expect(page.locator("#room-name")).to_have_text("#draft-a")
    expect(page.locator("#text")).to_have_value("")


def test_a_room_whose_people_left_still_counts_what_they_said(new_page, server: Server) -> None:
    """Said, then gone before the next poll (or before the page came back): no one is online
    there, but what they said is unread all the same."""
    page = open_chat(new_page, server, "/r/gone-a?name=walker", clock=True)
    join_room(page, "gone-b")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    with Client(server, "gone-a", "visitor") as visitor:
        visitor.expect("welcome")
        visitor.say("dropped by")
        visitor.expect("message", text="dropped by")
    wait_for(lambda: not members_of(server, "gone-a"), what="the visitor gone")
    page.clock.fast_forward(31_000)  # the next poll
    expect(page.locator("#rooms a", has_text="gone-a").locator(".count")).to_have_text("1 unread")
    page.reload()  # and when the page comes back
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#rooms a", has_text="gone-a").locator(".count")).to_have_text("1 unread")


def members_of(server: Server, room: str) -> int:
    """The members /api/rooms counts in `room` now (it lists a named room with messages too)."""
    listed = json.loads(server.get(f"/api/rooms?room={room}")[2])["rooms"]
    return sum(r["members"] for r in listed if r["room"] == room)


def test_unread_messages_too_long_for_one_page_are_all_counted(new_page, server: Server) -> None:
    """60 messages of 2,000 three-byte characters (372 KB) do not fit in one page of the API
    (256 KB, `more`): the count pages on and says 60, not the 41 of the first page."""
    page = open_chat(new_page, server, "/r/long-a?name=reader", clock=True)
    join_room(page, "long-b")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    with Client(server, "long-a", "writer") as writer:
        writer.expect("welcome")
        for n in range(60):
            writer.say(f"{n:02d}" + "€" * 1998)
            writer.expect("message")
        page.clock.fast_forward(31_000)  # the next poll
        expect(page.locator("#rooms a", has_text="long-a").locator(".count")).to_have_text("60 unread")


def test_a_room_link_keeps_the_focus_when_the_list_is_made_anew(new_page, server: Server) -> None:
    """Each poll makes the room list anew: a keyboard user on a room's link stays on it."""
    page = open_chat(new_page, server, "/r/focus-a?name=reader", clock=True)
    join_room(page, "focus-b")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    link = page.locator("#rooms a", has_text="focus-a")
    link.focus()
    with Client(server, "focus-a", "writer") as writer:
        writer.expect("welcome")
        writer.say("while you look at the list")
        writer.expect("message")
        page.clock.fast_forward(31_000)  # the next poll: the list made anew, with the count
        expect(link.locator(".count")).to_have_text("1 unread")
        expect(link).to_be_focused()
