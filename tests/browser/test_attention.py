"""Attention: a mention of oneself stands out; with the tab hidden, a mention or a message that
breaks a quiet spell raises a desktop notification, once asked for on a click (never on load)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.pages import VISIBILITY, hide, open_chat, show
from tests.helpers import Client, Server

pytestmark = pytest.mark.browser

# The browser's Notification, played: what the page asks and what it shows are recorded.
NOTIFICATIONS = """
window.__asked = 0;
window.__shown = [];
window.Notification = class {
  static permission = "default";
  static requestPermission() {
    window.__asked += 1;
    window.Notification.permission = "granted";
    return Promise.resolve("granted");
  }
  constructor(title, options) { window.__shown.push([title, options.body]); }
  close() {}
};
"""


def test_a_mention_of_oneself_stands_out(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/mentions?name=Reader")
    with Client(server, "mentions", "talker") as talker:
        talker.expect("welcome")
        for text in ("@reader can you look?", "@readers is not you", "mail reader@example.com", "hi @READER."):
            talker.say(text)
        expect(page.locator("#log .msg")).to_have_count(4)
    mentions = page.locator("#log .msg.mention")
    expect(mentions.locator(".body")).to_have_text(["@reader can you look?", "hi @READER."])
    expect(mentions.locator("mark.at-me")).to_have_text(["@reader", "@READER"])
    assert mentions.first.evaluate("m => getComputedStyle(m).backgroundColor") != page.locator(
        "#log .msg:not(.mention)"
    ).first.evaluate("m => getComputedStyle(m).backgroundColor")


def test_notifications_are_asked_for_on_a_click_and_shown_while_hidden(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/notify?name=reader", init_script=VISIBILITY + NOTIFICATIONS)
    assert page.evaluate("window.__asked") == 0  # never on load
    expect(page.locator("#notify")).to_have_attribute("aria-pressed", "false")
    page.click("#notify")
    expect(page.locator("#notify")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.__asked") == 1
    with Client(server, "notify", "talker") as talker:
        talker.expect("welcome")
        talker.say("seen while here")  # the tab in view: no notification
        expect(page.locator("#log .msg")).to_have_count(1)
        hide(page)
        talker.say("a quick follow-up")  # not after a quiet spell, no mention: none
        talker.say("@reader are you there?")
        expect(page).to_have_title("(2) Chat · #notify")
        shown = page.evaluate("window.__shown")
        assert shown == [["talker mentioned you in #notify", "@reader are you there?"]]
        show(page)
        page.click("#notify")  # and off again
        expect(page.locator("#notify")).to_have_attribute("aria-pressed", "false")
        hide(page)
        talker.say("@reader still?")
        expect(page).to_have_title("(1) Chat · #notify")
        assert len(page.evaluate("window.__shown")) == 1


def test_a_message_after_a_quiet_spell_notifies(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/quiet?name=reader", init_script=VISIBILITY + NOTIFICATIONS)
    page.click("#notify")
    expect(page.locator("#notify")).to_have_attribute("aria-pressed", "true")
    hide(page)
    with Client(server, "quiet", "talker") as talker:
        talker.expect("welcome")
        talker.say("anyone around?")  # the room's first message in a long while
        talker.say("hello?")  # right after: the first one said it
        expect(page).to_have_title("(2) Chat · #quiet")
    assert page.evaluate("window.__shown") == [["talker in #quiet", "anyone around?"]]
