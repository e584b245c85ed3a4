"""The page in a real browser: people chatting, as they would."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chatapp.chat import WELCOME_MEMBERS
from tests.browser.pages import PHONE, SMALL_PHONE, join_room, open_chat
from tests.helpers import RawClient, Server

pytestmark = pytest.mark.browser

XSS = '<img src=x onerror="document.body.dataset.pwned=1"><script>document.body.dataset.pwned=2</script>'


def test_two_people_chat_and_text_stays_text(new_page, server: Server, artifacts) -> None:
    alice = open_chat(new_page, server, "/r/pair?name=alice")
    bob = open_chat(new_page, server, "/r/pair?name=bob")
    expect(alice.locator("#members li")).to_have_text(["alice", "bob"])
    expect(alice.locator("#log")).to_contain_text("bob joined")

    alice.fill("#text", "hello bob")
    alice.press("#text", "Enter")
    expect(bob.locator("#log .msg .body")).to_have_text(["hello bob"])
    expect(bob.locator("#log .msg .who")).to_have_text(["alice"])
    expect(alice.locator("#log .msg.mine .body")).to_have_text(["hello bob"])
    expect(alice.locator("#log .msg.pending")).to_have_count(0)  # the echo replaced the pending line
    expect(alice.locator("#text")).to_have_value("")

    bob.fill("#text", XSS)
    bob.click("#composer button")
    expect(alice.locator("#log .msg .body").last).to_have_text(XSS)
    assert alice.locator("#log img, #log script").count() == 0
    assert alice.evaluate("document.body.dataset.pwned") is None
    alice.screenshot(path=artifacts / "desktop.png")

    bob.close()
    expect(alice.locator("#members li")).to_have_text(["alice"])
    expect(alice.locator("#log")).to_contain_text("bob left")


def test_the_name_is_asked_once_and_kept(new_page, server: Server) -> None:
    page = new_page(server.url + "/r/named")
    expect(page.locator("#name-dialog")).to_be_visible()
    page.fill("#name-input", "Zoë")
    page.press("#name-input", "Enter")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#members li.me")).to_have_text("Zoë")
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#name-dialog")).not_to_be_visible()
    expect(page.locator("#members li.me")).to_have_text("Zoë")


def test_switching_rooms_without_a_reload(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/first?name=mover")
    other = open_chat(new_page, server, "/r/second?name=waiting")
    page.evaluate("window.loadMarker = 1")
    join_room(page, "#Second")  # the "#" and the capital are forgiven
    expect(page).to_have_url(server.url + "/r/second?name=mover")
    expect(page.get_by_role("heading", level=1)).to_have_text("#second")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#members li")).to_have_text(["mover", "waiting"])
    assert page.evaluate("window.loadMarker") == 1  # the same page: no reload
    other.fill("#text", "welcome to second")
    other.press("#text", "Enter")
    expect(page.locator("#log .msg .body")).to_have_text(["welcome to second"])
    page.go_back()
    expect(page.locator("#room-name")).to_have_text("#first")
    expect(page.locator("#members li")).to_have_text(["mover"])


@pytest.mark.parametrize("phone", [PHONE, SMALL_PHONE], ids=["390x844", "360x640"])
def test_readable_on_a_phone(new_page, server: Server, artifacts, phone) -> None:
    size = phone["viewport"]
    page = open_chat(new_page, server, f"/r/phone-{size['width']}?name=pocket", **phone)
    for n in range(3):
        page.fill("#text", f"message {n} from a phone, long enough to wrap onto a second line here")
        page.press("#text", "Enter")
    expect(page.locator("#log .msg:not(.pending)")).to_have_count(3)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= size["width"]  # nothing wider than the screen
    composer = page.locator("#composer").bounding_box()
    assert composer["y"] + composer["height"] <= size["height"]  # the composer in reach
    expect(page.locator("#members-panel")).to_be_hidden()
    expect(page.locator("#rooms-panel")).to_be_hidden()
    page.click("#members-toggle")
    expect(page.locator("#members-panel")).to_be_visible()
    expect(page.locator("#backdrop")).to_be_visible()
    page.mouse.click(10, size["height"] / 2)  # a tap outside, on the backdrop
    expect(page.locator("#members-panel")).to_be_hidden()
    expect(page.locator("#backdrop")).to_be_hidden()
    page.click("#rooms-toggle")
    expect(page.locator("#rooms-panel")).to_be_visible()
    page.click("#rooms-panel [data-close]")  # its close button
    expect(page.locator("#rooms-panel")).to_be_hidden()
    expect(page.locator("#rooms-toggle")).to_be_focused()
    page.screenshot(path=artifacts / f"phone-{size['width']}.png")


def test_the_log_follows_only_a_reader_at_the_bottom(new_page, server: Server) -> None:
    reader = open_chat(new_page, server, "/r/scroll?name=reader")
    writer = open_chat(new_page, server, "/r/scroll?name=writer")
    for n in range(40):
        writer.fill("#text", f"line {n}")
        writer.press("#text", "Enter")
    expect(reader.locator("#log .msg")).to_have_count(40)
    at_bottom = "(l => l.scrollHeight - l.scrollTop - l.clientHeight < 8)(document.getElementById('log'))"
    assert reader.evaluate(at_bottom)  # followed while at the bottom
    reader.evaluate("document.getElementById('log').scrollTop = 0")
    writer.fill("#text", "while you read")
    writer.press("#text", "Enter")
    expect(reader.locator("#log .msg")).to_have_count(41)
    assert reader.evaluate("document.getElementById('log').scrollTop") == 0  # did not jump


def test_the_page_reconnects_after_a_restart(new_page, make_server) -> None:
    server = make_server()
    page = open_chat(new_page, server, "/r/restart?name=patient")
    port = server.port
    server.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#status")).to_contain_text("Reconnecting")
    make_server(port=port)
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=15_000)
    page.fill("#text", "back again")
    page.press("#text", "Enter")
    expect(page.locator("#log .msg:not(.pending) .body")).to_have_text(["back again"])


def test_typing_shows_and_clears(new_page, server: Server) -> None:
    watcher = open_chat(new_page, server, "/r/typing?name=watcher")
    typer = open_chat(new_page, server, "/r/typing?name=typer")
    typer.locator("#text").press_sequentially("hel")
    expect(watcher.locator("#typing")).to_have_text("typer is typing…")
    expect(typer.locator("#typing")).to_have_text("")  # not about yourself
    expect(watcher.locator("#typing")).to_have_text("", timeout=6_000)  # cleared after a few seconds


def test_a_refused_message_is_marked_not_sent(new_page, make_server) -> None:
    server = make_server({"MAX_MESSAGE_CHARS": "5"})
    page = open_chat(new_page, server, "/r/refused?name=wordy")
    page.fill("#text", "far too long")
    page.press("#text", "Enter")
    expect(page.locator("#log .msg.failed .body")).to_have_text(["far too long"])
    expect(page.locator("#log .system.error")).to_contain_text("at most 5 characters")
    page.fill("#text", "short")
    page.press("#text", "Enter")
    expect(page.locator("#log .msg:not(.pending):not(.failed) .body")).to_have_text(["short"])
    expect(page.locator("#status")).to_have_attribute("data-state", "open")


def test_a_big_room_lists_some_members_and_counts_them_all(new_page, make_server) -> None:
    server = make_server({"MAX_CONNECTIONS_PER_IP": "0"})  # the crowd comes from one address
    crowd = [RawClient(server, f"/ws?room=crowd&name=m{i:03}") for i in range(WELCOME_MEMBERS + 1)]
    try:
        for member in crowd:  # bare sockets: cheap to open, and to close unread
            assert b'"type":"welcome"' in member.read_frame()[1]
        page = open_chat(new_page, server, "/r/crowd?name=zed")
        expect(page.locator("#member-count")).to_have_text(str(WELCOME_MEMBERS + 2))
        expect(page.locator("#members li.me")).to_have_text("zed")
        expect(page.locator("#members li.more")).to_have_text("and 1 more")
        expect(page.locator("#members li:not(.more)")).to_have_count(WELCOME_MEMBERS + 1)
    finally:
        for member in crowd:
            member.close()
