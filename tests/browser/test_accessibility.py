"""Accessible in both themes, on a desktop and a phone: axe-core (bundled by
axe-playwright-python) finds no serious or critical violation, colour contrast included, in
each state of the page; and everything works from the keyboard alone."""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.browser.pages import DESKTOP, PHONE, days_ago, open_chat, say, seed
from tests.helpers import Client, Server

pytestmark = pytest.mark.browser

AXE = Axe()
DEVICES = {"desktop": DESKTOP, "phone": PHONE}


def violations(page, state: str) -> list[str]:
    """The serious and critical violations axe finds on the page as it is now, one line each."""
    found = AXE.run(page).response["violations"]
    return [
        f"{state}: {v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_no_serious_violation_in_any_state(new_page, server: Server, scheme: str, device: str) -> None:
    room = f"axe-{device}-{scheme}"
    options = {"color_scheme": scheme, **DEVICES[device]}
    seed(server, room, [(days_ago(1), "Cat", "Yesterday's line, https://example.com/a link in it")])
    found = []

    # The name dialog, before anything else.
    fresh = new_page(f"{server.url}/r/{room}", **options)
    expect(fresh.locator("#name-dialog")).to_be_visible()
    found += violations(fresh, "name dialog")
    fresh.context.close()

    # A conversation: day rules, a join line, one's own and others' messages, a mention, a
    # link, someone typing, an error line.
    page = open_chat(new_page, server, f"/r/{room}?name=Ann", **options)
    with Client(server, room, "Bob") as bob:
        bob.expect("welcome")
        bob.say("@Ann the build is green: https://example.com/ci/42")
        say(page, "Thanks! Shipping it.")
        bob.send({"type": "typing"})
        expect(page.locator("#typing")).to_have_text("Bob is typing…")
        expect(page.locator("#log .msg:not(.pending)")).to_have_count(3)
        expect(page.locator("#log .msg.mention")).to_have_count(1)
        found += violations(page, "conversation")

        # The room dialog, with a name it refuses.
        if page.locator("#rooms-toggle").is_visible():
            page.click("#rooms-toggle")
        page.click("#join-room")
        page.fill("#room-input", "no spaces? no!")
        expect(page.locator("#room-hint")).to_have_class("hint error")
        found += violations(page, "room dialog")
        page.keyboard.press("Escape")
        expect(page.locator("#room-dialog")).to_be_hidden()

        # The drawers (a phone), or the sidebars that they are on a desktop.
        for toggle, panel in (("#members-toggle", "#members-panel"), ("#rooms-toggle", "#rooms-panel")):
            if page.locator(toggle).is_visible():
                page.click(toggle)
                expect(page.locator(panel)).to_have_css("transform", "none")
            found += violations(page, f"{panel} open")
            if page.locator("#backdrop").is_visible():
                page.keyboard.press("Escape")
                expect(page.locator("#backdrop")).to_be_hidden()
    assert found == [], "\n".join(found)


def focused(page, selector: str) -> bool:
    return page.evaluate("s => document.activeElement.matches(s)", selector)


def tab_to(page, selector: str, key: str = "Tab", limit: int = 20) -> None:
    """Press Tab (or Shift+Tab) until `selector` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press(key)
        if focused(page, selector):
            return
    raise AssertionError(f"{selector} not reached with {limit} presses of {key}")


def test_everything_works_from_the_keyboard_on_a_desktop(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/keys-one?name=kim", **DESKTOP)
    other = open_chat(new_page, server, "/r/keys-two?name=lee")
    # a room by name: the button, the dialog, Enter; the focus lands in the message box
    tab_to(page, "#join-room")
    page.keyboard.press("Enter")
    expect(page.locator("#room-dialog")).to_be_visible()
    expect(page.locator("#room-input")).to_be_focused()
    page.keyboard.type("keys-two")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("#keys-two")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#text")).to_be_focused()
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Enter")
    expect(other.locator("#log .msg .body")).to_have_text(["typed without a mouse"])
    # Escape leaves the dialog, the focus back where it was
    tab_to(page, "#join-room", "Shift+Tab")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    expect(page.locator("#room-dialog")).to_be_hidden()
    expect(page.locator("#join-room")).to_be_focused()
    # back to the first room through the room list
    tab_to(page, "#rooms a[href^='/r/keys-one']", "Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("#keys-one")
    # and the links in messages are reachable
    say(other, "see https://example.com/kb")
    page.locator("#rooms a", has_text="keys-two").press("Enter")
    expect(page.locator("#log .msg a")).to_have_count(1)
    tab_to(page, "#log .msg a")


def test_everything_works_from_the_keyboard_on_a_phone(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/thumbs-one?name=kim", **PHONE)
    # the rooms drawer: open with Enter, the focus inside it (the rest of the page is inert), a room with Enter
    page.locator("#rooms-toggle").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#rooms-panel")).to_be_visible()
    expect(page.locator("#rooms-panel [data-close]")).to_be_focused()
    tab_to(page, "#join-room")
    page.keyboard.press("Enter")
    expect(page.locator("#room-input")).to_be_focused()
    page.keyboard.type("thumbs-two")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("#thumbs-two")
    expect(page.locator("#rooms-panel")).to_be_hidden()
    page.locator("#rooms-toggle").focus()
    page.keyboard.press("Enter")
    tab_to(page, "#notify")  # the drawer's last control: Tab goes no further into the page (inert)
    page.keyboard.press("Tab")
    assert not page.evaluate("document.querySelector('.conversation').contains(document.activeElement)")
    tab_to(page, "#rooms a[href^='/r/thumbs-one']")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("#thumbs-one")
    expect(page.locator("#rooms-panel")).to_be_hidden()
    # the people: open, then Escape, and the focus is back on the button
    tab_to(page, "#members-toggle")
    page.keyboard.press("Enter")
    expect(page.locator("#members-panel")).to_be_visible()
    expect(page.locator("#members-panel [data-close]")).to_be_focused()
    page.keyboard.press("Shift+Tab")  # nowhere behind the drawer
    assert not page.evaluate("document.querySelector('.conversation').contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(page.locator("#members-panel")).to_be_hidden()
    expect(page.locator("#members-toggle")).to_be_focused()
    tab_to(page, "#text")
    page.keyboard.type("thumbs up")
    page.keyboard.press("Enter")
    expect(page.locator("#log .msg:not(.pending) .body")).to_have_text(["thumbs up"])
