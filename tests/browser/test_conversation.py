"""The page as people use it: groups, links, the keyboard, unread counts, recent rooms, the
network going away, history on join, and the screenshots of the README."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_page import open_chat
from tests.helpers import Client, Server

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
# Headless Chromium never hides a page, so a test plays the hidden tab: the Page Visibility
# API reports what `window.__hidden` says, and the test fires the event a browser would.
VISIBILITY = """
Object.defineProperty(Document.prototype, "hidden", { get: () => window.__hidden === true });
Object.defineProperty(Document.prototype, "visibilityState", {
  get: () => (window.__hidden === true ? "hidden" : "visible"),
});
"""

# How many times something is put into the log (one insertion may hold many lines).
COUNT_INSERTIONS = """
window.__insertions = 0;
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver((records) => {
    window.__insertions += records.filter((r) => r.addedNodes.length).length;
  }).observe(document.getElementById("log"), { childList: true });
});
"""


def say(page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_three_people_see_groups_times_and_join_lines(new_page, server: Server) -> None:
    ann = open_chat(new_page, server, "/r/trio?name=ann")
    bob = open_chat(new_page, server, "/r/trio?name=bob")
    cat = open_chat(new_page, server, "/r/trio?name=cat")
    expect(ann.locator("#log .system")).to_have_text(["bob joined", "cat joined"])
    expect(ann.locator("#members li")).to_have_text(["ann", "bob", "cat"])
    say(ann, "first")
    say(ann, "second, same sender")
    say(bob, "bob here")
    say(ann, "ann again")
    for page in (ann, bob, cat):
        messages = page.locator("#log .msg:not(.pending)")
        expect(messages.locator(".body")).to_have_text(["first", "second, same sender", "bob here", "ann again"])
        # the second of a sender's run shows no header; a new sender, or a return, shows one
        assert [("cont" in (c or "")) for c in messages.evaluate_all("ns => ns.map(n => n.className)")] == [
            False,
            True,
            False,
            False,
        ]
        expect(messages.locator(".meta .who").filter(visible=True)).to_have_text(["ann", "bob", "ann"])
        stamp = messages.first.locator("time")
        assert stamp.get_attribute("datetime").endswith("Z") and ":" in stamp.inner_text()
    expect(cat.locator("#log .msg.mine")).to_have_count(0)
    expect(ann.locator("#log .msg.mine")).to_have_count(3)


def test_links_are_clickable_and_text_stays_text(new_page, server: Server) -> None:
    writer = open_chat(new_page, server, "/r/links?name=writer")
    reader = open_chat(new_page, server, "/r/links?name=reader")
    text = (
        'see https://example.com/a?b=1&c=<i>x</i>, or (http://127.0.0.1/doc). Not javascript:alert(1) "x"'
        " (https://en.wikipedia.org/wiki/Go_(game))."
    )
    say(writer, text)
    body = reader.locator("#log .msg .body").last
    expect(body).to_have_text(text)  # every character as typed
    links = body.locator("a")
    expect(links).to_have_count(3)
    rel = "noopener noreferrer nofollow"
    go = "https://en.wikipedia.org/wiki/Go_(game)"  # its own ")" kept, the sentence's not
    assert links.evaluate_all("as => as.map(a => [a.href, a.textContent, a.rel, a.target])") == [
        ["https://example.com/a?b=1&c=", "https://example.com/a?b=1&c=", rel, "_blank"],
        ["http://127.0.0.1/doc", "http://127.0.0.1/doc", rel, "_blank"],
        [go, go, rel, "_blank"],
    ]
    assert body.locator("i").count() == 0


def test_enter_sends_shift_enter_breaks_the_line_and_escape_closes_the_panel(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/keys?name=typist", **PHONE)
    other = open_chat(new_page, server, "/r/keys?name=other")
    page.click("#text")
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    expect(page.locator("#text")).to_have_value("line one\nline two")  # not sent yet
    page.keyboard.press("Enter")
    expect(other.locator("#log .msg .body")).to_have_text(["line one\nline two"])
    expect(page.locator("#text")).to_have_value("")
    page.click("#members-toggle")
    expect(page.locator("#members-panel")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#members-panel")).to_be_hidden()
    expect(page.locator("#members-toggle")).to_be_focused()
    expect(page.locator("#members-toggle")).to_have_attribute("aria-expanded", "false")


def test_unread_messages_count_in_the_title_while_the_tab_is_hidden(new_page, server: Server) -> None:
    away = open_chat(new_page, server, "/r/unread?name=away")
    away.evaluate(VISIBILITY)
    talker = open_chat(new_page, server, "/r/unread?name=talker")
    expect(away.locator("#members li")).to_have_count(2)
    away.evaluate("window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'))")
    say(talker, "one")
    say(talker, "two")
    expect(away).to_have_title("(2) Chat · #unread")
    say(away, "my own does not count")
    say(talker, "three")
    expect(away).to_have_title("(3) Chat · #unread")
    away.evaluate("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))")
    expect(away).to_have_title("Chat · #unread")
    say(talker, "seen at once")
    expect(away.locator("#log .msg .body").last).to_have_text("seen at once")
    expect(away).to_have_title("Chat · #unread")


def test_recent_rooms_switch_the_room_without_a_reload(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/alpha?name=walker")
    page.evaluate("window.loadMarker = 1")
    for room in ("beta", "gamma"):
        page.fill("#room-input", room)
        page.press("#room-input", "Enter")
        expect(page.locator("#rooms a[aria-current=page]")).to_have_text(f"#{room}")
    expect(page.locator("#rooms a")).to_have_text(["#gamma", "#beta", "#alpha"])  # the latest first
    page.click("#rooms a >> text=#alpha")
    expect(page).to_have_url(server.url + "/r/alpha?name=walker")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#rooms a")).to_have_text(["#alpha", "#gamma", "#beta"])
    assert page.evaluate("window.loadMarker") == 1
    page.reload()  # kept across visits
    expect(page.locator("#rooms a")).to_have_text(["#alpha", "#gamma", "#beta"])


def test_offline_then_online_sends_what_was_typed_once(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/tunnel?name=commuter")
    friend = open_chat(new_page, server, "/r/tunnel?name=friend")
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.context.set_offline(True)
    expect(page.locator("#status")).to_have_text("Offline")
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    say(page, "typed in the tunnel")
    expect(page.locator("#log .msg.pending .body")).to_have_text(["typed in the tunnel"])
    say(friend, "meanwhile")
    page.context.set_offline(False)
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(friend.locator("#log .msg .body")).to_have_text(["meanwhile", "typed in the tunnel"])
    expect(page.locator("#log .msg:not(.pending) .body")).to_have_text(["meanwhile", "typed in the tunnel"])
    expect(page.locator("#log .msg.pending")).to_have_count(0)
    assert len(sockets) == 1  # it reconnected once the network was back, with one socket


def test_a_network_back_before_the_name_is_chosen_opens_no_socket(new_page, server: Server) -> None:
    page = new_page(server.url + "/r/nameless")
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    expect(page.locator("#name-dialog")).to_be_visible()
    page.evaluate("dispatchEvent(new Event('offline')); dispatchEvent(new Event('online'))")
    page.fill("#name-input", "Late")
    page.press("#name-input", "Enter")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#members li")).to_have_text(["Late"])  # no guest joined on its behalf
    assert len(sockets) == 1


def test_history_on_join_arrives_at_once_and_shows_the_latest(new_page, server: Server) -> None:
    writer = open_chat(new_page, server, "/r/backlog?name=writer")
    for n in range(30):
        say(writer, f"earlier {n}")
    expect(writer.locator("#log .msg:not(.pending)")).to_have_count(30)
    late = new_page(server.url + "/r/backlog?name=late", init_script=COUNT_INSERTIONS)
    expect(late.locator("#status")).to_have_attribute("data-state", "open")
    expect(late.locator("#log .msg .body")).to_have_count(30)
    assert late.evaluate("window.__insertions") == 1  # all of the history at once: no jump while it loads
    expect(late.locator("#log .msg .body").first).to_have_text("earlier 0")
    at_bottom = "(l => l.scrollHeight - l.scrollTop - l.clientHeight < 8)(document.getElementById('log'))"
    assert late.evaluate(at_bottom)  # the latest in view, as in any chat
    expect(late.locator("#log .msg.cont")).to_have_count(29)  # one sender, one header


def test_screenshots_desktop_and_phone_light_and_dark(new_page, server: Server, artifacts) -> None:
    """The README's pictures: one conversation, seen by Ann on a desktop and a phone, light and dark."""
    shots = []
    rooms = iter(("team", "ops", "web", "dev"))
    for scheme in ("light", "dark"):
        for device, options in (("desktop", {"viewport": {"width": 1100, "height": 640}}), ("phone", PHONE)):
            room = next(rooms)
            ann = open_chat(new_page, server, f"/r/{room}?name=Ann", color_scheme=scheme, **options)
            bob = open_chat(new_page, server, f"/r/{room}?name=Bob")
            say(ann, "Morning! The deploy went out at 9.")
            say(ann, "Release notes: https://example.com/releases/2.4")
            expect(bob.locator("#log .msg")).to_have_count(2)
            say(bob, "Nice, thanks. Any trouble with the migration?")
            expect(ann.locator("#log .msg")).to_have_count(3)
            say(ann, "None, it ran in 40 s.")
            bob.fill("#text", "…")
            bob.keyboard.type(" ")  # Ann sees Bob typing
            expect(ann.locator("#typing")).to_have_text("Bob is typing…")
            expect(ann.locator("#log .msg:not(.pending)")).to_have_count(4)
            path = artifacts / f"{device}-{scheme}.png"  # `make screenshots` copies them to docs/
            ann.screenshot(path=path)
            shots.append(path)
    assert all(path.stat().st_size > 10_000 for path in shots)


def test_controls_have_accessible_names_and_new_messages_are_announced(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/a11y?name=reader")
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.get_by_role("textbox", name="Room")).to_have_value("a11y")
    expect(page.get_by_role("navigation", name="Recent rooms").get_by_role("link", name="#a11y")).to_be_visible()
    expect(page.get_by_role("list", name="Online")).to_have_text("reader")
    expect(page.get_by_role("status")).to_have_text("Live")
    expect(page.get_by_role("list", name="Messages")).to_have_attribute("aria-live", "polite")


def test_ones_own_messages_stay_ones_own_after_a_reload(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/reload?name=me")
    other = open_chat(new_page, server, "/r/reload?name=other")
    say(page, "mine before the reload")
    say(other, "theirs")
    expect(page.locator("#log .msg:not(.pending)")).to_have_count(2)
    page.reload()  # a new connection, a new id: the page knows its messages by their cids
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#log .msg.mine .body")).to_have_text(["mine before the reload"])
    expect(other.locator("#log .msg.mine .body")).to_have_text(["theirs"])


def test_a_message_sent_with_ones_cid_by_another_is_not_shown_as_ones_own(new_page, server: Server) -> None:
    """Someone who copies the cid of one's message (it travels with the message) and sends it
    again makes a message of their own: shown as theirs, and one's own stays as it was."""
    page = open_chat(new_page, server, "/r/copycat?name=me")
    with Client(server, "copycat", "eve", key="eve-" + "k" * 16) as eve:
        eve.expect("welcome")
        say(page, "my words")
        copied = eve.expect("message", text="my words")["cid"]
        eve.say("eve's words", cid=copied)
        eve.expect("message", text="eve's words")
    expect(page.locator("#log .msg:not(.pending) .body")).to_have_text(["my words", "eve's words"])
    expect(page.locator("#log .msg.mine .body")).to_have_text(["my words"])
