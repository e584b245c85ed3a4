"""What the browser tests share: opening the chat, saying something, the phone sizes, playing a
hidden tab, and history written straight into the server's store (for times a live message
cannot have, such as yesterday)."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from chatapp.store import append
from chatapp.store.sqlite import SQLiteStore
from tests.helpers import Server

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
SMALL_PHONE = {
    "viewport": {"width": 360, "height": 640},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESKTOP = {"viewport": {"width": 1100, "height": 640}}

# Headless Chromium never hides a page, so a test plays the hidden tab: the Page Visibility
# API reports what `window.__hidden` says, and `hide` and `show` fire the event a browser would.
VISIBILITY = """
Object.defineProperty(Document.prototype, "hidden", { get: () => window.__hidden === true });
Object.defineProperty(Document.prototype, "visibilityState", {
  get: () => (window.__hidden === true ? "hidden" : "visible"),
});
"""
AT_BOTTOM = "(l => l.scrollHeight - l.scrollTop - l.clientHeight < 8)(document.getElementById('log'))"


def open_chat(new_page, server: Server, path: str, **options):
    page = new_page(server.url + path, **options)
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    return page


def say(page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def join_room(page, room: str) -> None:
    """Through the room dialog, as a person would: the button, the name, Enter."""
    page.click("#join-room")
    page.fill("#room-input", room)
    page.press("#room-input", "Enter")


def hide(page) -> None:
    page.evaluate("window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'))")


def show(page) -> None:
    page.evaluate("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))")


def seed(server: Server, room: str, lines: list[tuple[float, str, str]]) -> list[dict]:
    """Store (ts, name, text) messages in `room` as another process would (the server's SQLite
    file is shared): they are history to whoever joins next, never live events."""
    store = SQLiteStore(server.env["DATABASE_PATH"], 1000)
    try:
        return [
            append(store, room, {"ts": ts, "user": {"id": f"bot:{who}", "name": who}, "text": text})[0]
            for ts, who, text in lines
        ]
    finally:
        store.close()


def days_ago(days: float) -> float:
    return time.time() - days * 86400
