"""Where you left off, and less noise: the "New messages" rule, day rules, the full date on
hover or a long press, an empty room that says so; join and leave lines with their time, no
lines for a reload or a quick switch, and a run of them collapsed."""

from __future__ import annotations

import datetime
import re
from contextlib import ExitStack

import pytest
from playwright.sync_api import expect

from tests.browser.pages import PHONE, VISIBILITY, days_ago, hide, join_room, open_chat, say, seed, show
from tests.helpers import Client, Server

pytestmark = pytest.mark.browser

UTC = {"timezone_id": "UTC", "locale": "en-US"}
BODIES_AND_RULES = "#log .msg:not(.pending) .body, #log .rule"


def test_new_messages_rule_after_a_hidden_tab_and_after_a_reload(new_page, server: Server) -> None:
    reader = open_chat(new_page, server, "/r/rule?name=reader", init_script=VISIBILITY)
    with Client(server, "rule", "talker") as talker:
        talker.expect("welcome")
        talker.say("seen")
        expect(reader.locator("#log .msg")).to_have_count(1)
        hide(reader)
        talker.say("while hidden 1")
        talker.say("while hidden 2")
        expect(reader).to_have_title("(2) Chat · #rule")
        show(reader)
        expect(reader.locator(BODIES_AND_RULES)).to_have_text(
            ["Today", "seen", "New messages", "while hidden 1", "while hidden 2"]
        )
        say(reader, "read them")  # one who writes has read what came before: the rule goes
        expect(reader.locator("#log .rule.new")).to_have_count(0)
        expect(reader.locator("#log .msg:not(.pending)")).to_have_count(4)

        # Gone (the page closed), then back: the rule is where the page left off.
        context = reader.context
        reader.close()
        talker.say("while closed")
        talker.expect("message", text="while closed")
        again = context.new_page()
        again.goto(server.url + "/r/rule?name=reader")
        expect(again.locator(BODIES_AND_RULES)).to_have_text(
            ["Today", "seen", "while hidden 1", "while hidden 2", "read them", "New messages", "while closed"]
        )


def test_day_rules_and_the_full_date_on_hover_and_long_press(new_page, server: Server) -> None:
    long_ago = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.UTC).timestamp()
    seed(
        server,
        "days",
        [
            (long_ago, "Cat", "a while back"),
            (long_ago + 60, "Cat", "same minute, same header"),
            (days_ago(1), "Cat", "yesterday"),
        ],
    )
    page = open_chat(new_page, server, "/r/days?name=reader", **PHONE, **UTC)
    say(page, "today")
    expect(page.locator(BODIES_AND_RULES)).to_have_text(
        [
            "Friday, March 1, 2024",
            "a while back",
            "same minute, same header",
            "Yesterday",
            "yesterday",
            "Today",
            "today",
        ]
    )
    first = page.locator("#log .msg").first
    expect(first.locator("time")).to_have_attribute("title", "Friday, March 1, 2024 at 12:00 PM")  # on hover
    second = page.locator("#log .msg.cont").first
    second.dispatch_event("pointerdown", {"pointerType": "touch", "isPrimary": True})  # held...
    expect(second).to_have_class(re.compile(r"\breveal\b"))  # ...until the full date shows
    second.dispatch_event("pointerup", {"pointerType": "touch"})
    expect(second.locator(".meta")).to_have_text("CatFriday, March 1, 2024 at 12:01 PM")
    assert second.locator("time").bounding_box()["width"] > 50  # shown, not only there for a screen reader


def test_a_grouped_message_shows_its_time_on_hover(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/hover?name=reader")
    with Client(server, "hover", "talker") as talker:
        talker.expect("welcome")
        talker.say("one")
        talker.say("two")
        expect(page.locator("#log .msg.cont")).to_have_count(1)
    header = page.locator("#log .msg.cont .meta")
    assert header.bounding_box()["width"] <= 1  # no header (but for a screen reader)...
    page.locator("#log .msg.cont").hover()
    expect(header).to_have_css("position", "absolute")
    assert header.bounding_box()["width"] > 20  # ...and its time, beside it, on hover
    expect(header.locator("time")).to_have_attribute("title", re.compile(r"\d{4} at "))  # the full date


def test_an_empty_room_says_so_and_invites_the_first_message(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/quiet-place?name=first")
    empty = page.locator("#log .empty")
    expect(empty).to_contain_text("This is the start of #quiet-place")
    expect(empty).to_contain_text("No messages yet")
    say(page, "hello?")
    expect(empty).to_have_count(0)
    expect(page.locator("#log .msg:not(.pending)")).to_have_count(1)


def test_join_and_leave_lines_carry_their_time_and_a_reload_shows_none(new_page, server: Server) -> None:
    ann = open_chat(new_page, server, "/r/comings?name=ann")
    bob = open_chat(new_page, server, "/r/comings?name=bob")
    lines = ann.locator("#log .system")
    expect(lines).to_have_count(1)
    expect(lines.first).to_contain_text("bob joined")
    stamp = lines.first.locator("time")
    assert stamp.get_attribute("datetime").endswith("Z") and ":" in stamp.inner_text()
    say(ann, "a message between")

    bob.reload()  # a new connection, the same person: no "left", no "joined"
    expect(bob.locator("#status")).to_have_attribute("data-state", "open")
    join_room(bob, "elsewhere")  # a quick switch and back
    expect(bob.locator("#status")).to_have_attribute("data-state", "open")
    bob.locator("#rooms a", has_text="comings").click()
    expect(bob.locator("#status")).to_have_attribute("data-state", "open")
    say(bob, "back already")
    expect(ann.locator("#log .msg .body").last).to_have_text("back already")
    expect(ann.locator("#members li")).to_have_text(["ann", "bob"])
    expect(lines).to_have_count(1)

    second_tab = bob.context.new_page()  # the same person twice: one person, and no lines
    second_tab.goto(server.url + "/r/comings?name=bob")
    expect(second_tab.locator("#status")).to_have_attribute("data-state", "open")
    second_tab.close()
    say(bob, "still here")
    expect(ann.locator("#log .msg .body").last).to_have_text("still here")
    expect(ann.locator("#members li")).to_have_text(["ann", "bob"])
    expect(lines).to_have_count(1)

    bob.close()  # gone for good: that one shows
    expect(lines).to_have_count(2)
    expect(lines.last).to_contain_text("bob left")


def test_a_run_of_joins_collapses_into_one_line(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/crowded?name=host")
    with ExitStack() as stack:
        for who in ("ava", "ben", "cy", "dot"):
            stack.enter_context(Client(server, "crowded", who)).expect("welcome")
        expect(page.locator("#members li")).to_have_count(5)
        line = page.locator("#log .system")
        expect(line).to_have_count(1)
        expect(line.locator("summary")).to_have_text("4 people joined")
        line.locator("summary").click()  # who they are, on a click
        expect(line).to_contain_text("Joined: ava, ben, cy, dot.")
    expect(line).to_have_count(1)  # and they all left: the same line
    expect(line.locator("summary")).to_have_text("4 people joined, 4 people left")
