"""Small things that looked broken: a phone's on-screen keyboard, the typing line once the
message comes, the status while the name dialog is open, the icon."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.pages import PHONE, SMALL_PHONE, open_chat, say
from tests.helpers import Client, Server

pytestmark = pytest.mark.browser

# An on-screen keyboard, played: headless Chromium has none, so the test gives the page a
# visualViewport whose height it sets, as a keyboard that opens would.
KEYBOARD = """
(() => {
  const viewport = new EventTarget();
  Object.assign(viewport, { width: innerWidth, height: innerHeight, offsetTop: 0, offsetLeft: 0, scale: 1 });
  Object.defineProperty(window, "visualViewport", { value: viewport });
  window.__keyboard = (height) => {
    viewport.height = height;
    viewport.dispatchEvent(new Event("resize"));
  };
})();
"""
IN_VIEW = """(above) => {
  const newest = [...document.querySelectorAll('#log .msg')].at(-1).getBoundingClientRect();
  const composer = document.getElementById('composer').getBoundingClientRect();
  return composer.bottom <= above && newest.bottom <= composer.top && newest.top >= 0;
}"""


@pytest.mark.parametrize("phone", [PHONE, SMALL_PHONE], ids=["390x844", "360x640"])
def test_with_the_keyboard_open_the_newest_message_and_the_composer_stay_in_view(
    new_page, server: Server, phone
) -> None:
    room = f"keyboard-{phone['viewport']['width']}"
    page = open_chat(new_page, server, f"/r/{room}?name=thumbs", init_script=KEYBOARD, **phone)
    with Client(server, room, "talker") as talker:
        talker.expect("welcome")
        for n in range(30):
            talker.say(f"line {n}")
        expect(page.locator("#log .msg")).to_have_count(30)
    page.click("#text")
    keyboard_top = phone["viewport"]["height"] * 0.55
    page.evaluate(f"window.__keyboard({keyboard_top})")
    page.wait_for_function(IN_VIEW, arg=keyboard_top)
    say(page, "typed with the keyboard up")
    expect(page.locator("#log .msg:not(.pending) .body").last).to_have_text("typed with the keyboard up")
    page.wait_for_function(IN_VIEW, arg=keyboard_top)
    page.evaluate(f"window.__keyboard({phone['viewport']['height']})")  # closed again
    page.wait_for_function(IN_VIEW, arg=phone["viewport"]["height"])


def test_the_typing_line_goes_when_that_persons_message_comes(new_page, server: Server) -> None:
    watcher = open_chat(new_page, server, "/r/typed?name=watcher")
    typer = open_chat(new_page, server, "/r/typed?name=typer")
    typer.locator("#text").press_sequentially("on my way")
    expect(watcher.locator("#typing")).to_have_text("typer is typing…")
    typer.press("#text", "Enter")
    expect(watcher.locator("#log .msg .body")).to_have_text(["on my way"])
    expect(watcher.locator("#typing")).to_have_text("", timeout=1_000)  # at once, not 3 s later


def test_the_status_says_the_name_is_awaited_while_the_dialog_is_open(new_page, server: Server) -> None:
    page = new_page(server.url + "/r/naming")
    expect(page.locator("#name-dialog")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Choose a name to join")
    page.fill("#name-input", "Named")
    page.press("#name-input", "Enter")
    expect(page.locator("#status")).to_have_text("Live")


def test_the_page_has_an_icon(new_page, server: Server) -> None:
    page = open_chat(new_page, server, "/r/icon?name=looker")
    href = page.locator("link[rel=icon]").get_attribute("href")
    response = page.request.get(server.url + href)
    assert response.status == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in response.body()
    by_old_name = page.request.get(server.url + "/favicon.ico")  # what browsers and tools ask for unbidden
    assert by_old_name.status == 200 and by_old_name.body() == response.body()


def test_the_people_drawers_close_button_is_a_plain_cross_on_a_tablet(new_page, server: Server) -> None:
    """Between a phone and a desktop (721 to 1023 px) the people are a drawer and the rooms a
    sidebar: the drawer's close button is the phone's bare cross, not a framed box."""
    page = open_chat(new_page, server, "/r/tablet?name=flat", viewport={"width": 800, "height": 700})
    page.click("#members-toggle")
    close = page.locator("#members-panel [data-close]")
    expect(close).to_be_visible()
    expect(close).to_have_css("border-top-color", "rgba(0, 0, 0, 0)")
    expect(close).to_have_css("background-color", "rgba(0, 0, 0, 0)")
