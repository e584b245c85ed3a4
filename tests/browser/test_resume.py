"""The page across a server restart: what was missed shows once, what was typed offline goes once."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import expect

from chatapp.store import append
from chatapp.store.sqlite import SQLiteStore
from tests.helpers import Client

pytestmark = pytest.mark.browser


def test_missed_messages_show_once_and_offline_messages_send_once(new_page, make_server, tmp_path) -> None:
    server = make_server()
    page = new_page(server.url + "/r/resume?name=viewer")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    with Client(server, "resume", "writer") as writer:
        writer.expect("welcome")
        for text in ("before 1", "before 2"):
            writer.say(text)
    bodies = page.locator("#log .msg:not(.pending) .body")
    expect(bodies).to_have_text(["before 1", "before 2"])

    port = server.port
    server.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    # While the server is down, another process on the same file stores three messages...
    other = SQLiteStore(str(tmp_path / "chat.sqlite3"), 1000)
    bot = {"id": "bot:other", "name": "other"}
    for n in (1, 2, 3):
        append(other, "resume", {"ts": time.time(), "user": bot, "text": f"missed {n}"})
    other.close()
    # ...and the viewer types one.
    page.fill("#text", "typed offline")
    page.press("#text", "Enter")
    expect(page.locator("#log .msg.pending .body")).to_have_text(["typed offline"])

    server = make_server(port=port)
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=15_000)
    expect(bodies).to_have_text(["before 1", "before 2", "missed 1", "missed 2", "missed 3", "typed offline"])
    expect(page.locator("#log .msg.pending")).to_have_count(0)
    stored = json.loads(server.get("/api/rooms/resume/messages")[2])["messages"]
    assert [m["text"] for m in stored] == ["before 1", "before 2", "missed 1", "missed 2", "missed 3", "typed offline"]


def test_a_history_that_was_reset_on_the_server_starts_the_page_afresh(new_page, make_server, tmp_path) -> None:
    """The history is gone while the page is away (a deleted SQLite file; a Redis that came
    back empty): ids start at 1 again under a new epoch. The page must not take the new
    messages for ones it has shown: it is told `reset`, and starts afresh."""
    server = make_server()
    page = new_page(server.url + "/r/afresh?name=viewer")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    with Client(server, "afresh", "writer") as writer:
        writer.expect("welcome")
        for text in ("old 1", "old 2", "old 3"):
            writer.say(text)
    bodies = page.locator("#log .msg .body")
    expect(bodies).to_have_text(["old 1", "old 2", "old 3"])

    port = server.port
    server.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    for path in tmp_path.glob("chat.sqlite3*"):  # the history, gone
        path.unlink()
    server = make_server(port=port)
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=15_000)
    expect(page.locator("#log .system").last).to_have_text("The server's history was reset; this is what it holds now.")
    with Client(server, "afresh", "writer") as writer:
        writer.expect("welcome")
        writer.say("new 1")  # id 1 again, which the page had shown before ("old 1")
    expect(bodies).to_have_text(["new 1"])


@pytest.mark.parametrize("reads", ["0", "1"], ids=["unlimited", "one-read-a-second"])
def test_a_resume_past_what_one_welcome_carries_fetches_the_rest_and_misses_nothing(
    new_page, make_server, tmp_path, reads: str
) -> None:
    """More came while the page was away than a welcome carries (256 KB: `more`). The page
    fetches what the welcome left out, page by page from the API, and shows every message once,
    in order; what the socket brought meanwhile comes after. With the address's API reads at
    one a second (API_RATE_LIMIT, as when many resume at once) it waits as the 429s say."""
    server = make_server()
    page = new_page(server.url + "/r/gap?name=viewer")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    with Client(server, "gap", "writer") as writer:
        writer.expect("welcome")
        writer.say("before")
    bodies = page.locator("#log .msg .body")
    expect(bodies).to_have_text(["before"])

    port = server.port
    server.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    other = SQLiteStore(str(tmp_path / "chat.sqlite3"), 1000)
    bot = {"id": "bot:other", "name": "other"}
    missed = [f"missed {n:03d} " + "x" * 500 for n in range(900)]  # about 630 KB: two API pages besides
    for text in missed:
        append(other, "gap", {"ts": time.time(), "user": bot, "text": text})
    other.close()

    server = make_server({"API_RATE_LIMIT": reads}, port=port)
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=15_000)
    with Client(server, "gap", "writer") as writer:
        writer.expect("welcome")
        writer.say("after")
    expect(bodies.last).to_have_text("after", timeout=15_000)
    shown = page.eval_on_selector_all("#log .msg .body", "nodes => nodes.map((n) => n.textContent)")
    assert shown == ["before", *missed, "after"]
    expect(page.locator("#log .system", has_text="not shown")).to_have_count(0)
