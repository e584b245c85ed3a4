"""The page as people use it: groups, links, the keyboard, unread counts, recent rooms, the
network going away, history on join, and the screenshots of the README."""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest
from playwright.sync_api import expect

from tests.browser.pages import DESKTOP, PHONE, VISIBILITY, days_ago, join_room, open_chat, say, seed
from tests.helpers import Client, Server

pytestmark = pytest.mark.browser


# How many times something is put into the log (one insertion may hold many lines).
COUNT_INSERTIONS = """
window.__insertions = 0;
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver((records) => {
    window.__insertions += records.filter((r) => r.addedNodes.length).length;
  }).observe(document.getElementById("log"), { childList: true });
});
"""


def test_three_people_see_groups_times_and_join_lines(new_page, server: Server) -> None:
    ann = open_chat(new_page, server, "/r/trio?name=ann")
    bob = open_chat(new_page, server, "/r/trio?name=bob")
    cat = open_chat(new_page, server, "/r/trio?name=cat")
    expect(ann.locator("#log .system")).to_have_count(1)  # joins in a row share a line
    expect(ann.locator("#log .system")).to_contain_text("bob and cat joined")
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
        # every message keeps its sender's name for a screen reader, the hidden header too
        expect(messages.locator(".meta .who")).to_have_text(["ann", "ann", "bob", "ann"])
        # ...in the accessibility tree (to_have_text reads textContent, which display:none keeps)
        grouped = "- listitem:\n  - text: ann\n  - time\n  - text: second, same sender"
        expect(messages.nth(1)).to_match_aria_snapshot(grouped)
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
        join_room(page, room)
        expect(page.locator("#rooms a[aria-current=page] .label")).to_have_text(room)
    expect(page.locator("#rooms .label")).to_have_text(["gamma", "beta", "alpha"])  # the latest first
    page.locator("#rooms a", has_text="alpha").click()
    expect(page).to_have_url(server.url + "/r/alpha?name=walker")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#rooms .label")).to_have_text(["alpha", "gamma", "beta"])
    assert page.evaluate("window.loadMarker") == 1
    page.reload()  # kept across visits
    expect(page.locator("#rooms .label")).to_have_text(["alpha", "gamma", "beta"])


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


# Ann's room list before she opens the chat: rooms she was in (kept in localStorage).
RECENT = """
if (!localStorage.getItem("chat.rooms")) {
  localStorage.setItem("chat.rooms", JSON.stringify(%s));
  localStorage.setItem("chat.seen", JSON.stringify(%s));
}
"""


def readme_scene(stack: ExitStack, new_page, server: Server, scheme: str, options: dict):
    """The README's conversation, as Ann sees it: yesterday's lines, Bob and Cat joining, a
    link, a mention of Ann, Cat typing; in her room list, #design with three unread messages (she last
    saw it yesterday) and #random, where people are, under "Active now"."""
    seed(
        server,
        "launch-planning",
        [
            (days_ago(1), "Cat", "Standup moves to 10:00 tomorrow."),
            (days_ago(1) + 40, "Cat", "Bring the launch checklist."),
        ],
    )
    old = seed(
        server,
        "design",
        [
            (days_ago(1), "Cat", "First sketches of the new sidebar are in the drive."),
            (days_ago(1) + 30, "Dee", "Looks great, I'll review them tomorrow."),
        ],
    )
    cat = stack.enter_context(Client(server, "design", "Cat"))
    cat.expect("welcome")
    for text in (
        "New mockups are up: https://example.com/mockups/v3",
        "I went with the compact list and the unread badges.",
        "Feedback welcome before Friday!",
    ):
        cat.say(text)
        cat.expect("message", text=text)
    for who in ("Dee", "Eli"):
        stack.enter_context(Client(server, "random", who)).expect("welcome")
    seen = {"design": {"id": old[-1]["id"], "epoch": json.loads(server.get("/api/rooms/design/messages")[2])["epoch"]}}
    script = RECENT % (json.dumps(["design", "support"]), json.dumps(seen))
    ann = open_chat(new_page, server, "/r/launch-planning?name=Ann", init_script=script, color_scheme=scheme, **options)
    # Bob's key fixed, so that the picture shows him in his own colour (magenta), not in Cat's
    # (teal, from her name) as one run in eight would: a person's colour is a hash of their uid.
    bob_key = "localStorage.setItem('chat.key', 'readme-bob-0000000000000010')"
    bob = open_chat(new_page, server, "/r/launch-planning?name=Bob", init_script=bob_key)
    here = stack.enter_context(Client(server, "launch-planning", "Cat"))
    expect(ann.locator("#log")).to_contain_text("Bob and Cat joined")
    say(ann, "Morning! The deploy went out at 9.")
    say(ann, "Release notes: https://example.com/releases/2.4")
    expect(bob.locator("#log .msg:not(.pending)")).to_have_count(4)
    say(bob, "@Ann nice! Any trouble with the migration?")
    expect(ann.locator("#log .msg")).to_have_count(5)
    say(ann, "None, it ran in 40 s.")
    here.send({"type": "typing"})  # Ann sees Cat typing
    expect(ann.locator("#typing")).to_have_text("Cat is typing…")
    expect(ann.locator("#log .msg:not(.pending)")).to_have_count(6)
    expect(ann.locator("#rooms a", has_text="design")).to_contain_text("3 unread")
    return ann


def test_screenshots_desktop_and_phone_light_and_dark(new_page, make_server, artifacts, tmp_path) -> None:
    """The README's pictures (`make screenshots` copies them to docs/screenshots): one
    conversation, seen by Ann on a desktop and a phone, light and dark; and, in light, her room
    list with unread counts on the phone, and the "New messages" rule where she left #design."""
    shots = []
    for scheme in ("light", "dark"):
        for device, options in (("desktop", DESKTOP), ("phone", PHONE)):
            server = make_server()
            with ExitStack() as stack:
                ann = readme_scene(stack, new_page, server, scheme, options)
                shots.append(artifacts / f"{device}-{scheme}.png")
                ann.screenshot(path=shots[-1])
                if (scheme, device) == ("light", "phone"):
                    ann.click("#rooms-toggle")
                    expect(ann.locator("#rooms-panel")).to_have_css("transform", "none")  # slid in
                    shots.append(artifacts / "rooms-unread.png")
                    ann.screenshot(path=shots[-1])
                if (scheme, device) == ("light", "desktop"):
                    ann.locator("#rooms a", has_text="design").click()
                    expect(ann.locator("#log .rule.new")).to_be_visible()
                    ann.mouse.move(560, 120)  # off the room list: no hover on the room just left
                    shots.append(artifacts / "new-messages.png")
                    ann.screenshot(path=shots[-1])
            server.stop()
            for path in tmp_path.glob("chat.sqlite3*"):  # the next picture's server starts afresh
                path.unlink()
    assert all(path.stat().st_size > 10_000 for path in shots)


def test_controls_have_accessible_names_and_new_messages_are_announced(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/a11y?name=reader")
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("#a11y")
    expect(page.get_by_role("navigation", name="Rooms").get_by_role("link", name="a11y")).to_be_visible()
    expect(page.get_by_role("button", name="Join or create a room")).to_be_visible()
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
