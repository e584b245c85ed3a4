"""/ws/text from a browser: a page that talks as the seed's home.html does (raw text frames, each
frame it is sent split into lines, each line shown as text), served from another origin, beside
the v1 page; with /ws's origin rules and limits."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.browser.pages import open_chat, say

pytestmark = pytest.mark.browser

# As the seed's home.html, its socket URL pointed at /ws/text (here: ?socket=): no room, no name
# (the lobby, a guest's name); each frame split on newlines, a line of text per entry; the form
# sends the box's text as one frame and empties it; a close says so. The frames are kept.
SEED_PAGE = b"""<!doctype html><html lang="en"><title>Chat Example</title>
<div id="log"></div>
<form id="form"><input type="submit" value="Send"> <input type="text" id="msg" size="64"></form>
<script>
window.__frames = [];
const log = document.getElementById("log"), msg = document.getElementById("msg");
const add = (text) => { const item = document.createElement("div"); item.innerText = text; log.append(item); };
const conn = new WebSocket(new URLSearchParams(location.search).get("socket"));
conn.onclose = () => add("Connection closed.");
conn.onmessage = (e) => { window.__frames.push(e.data); e.data.split("\\n").forEach(add); };
document.getElementById("form").onsubmit = () => {
  if (msg.value) { conn.send(msg.value); msg.value = ""; }
  return false;
};
</script></html>"""


class SeedPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(SEED_PAGE)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def seed_site() -> Iterator[str]:
    """The page's origin: a server of its own on this host, as the seed's (Chromium lets only a
    local page open a WebSocket to a loopback address)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SeedPage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def seed_say(page, text: str) -> None:
    page.fill("#msg", text)
    page.click("input[type=submit]")


def test_the_seeds_page_and_the_v1_page_chat_through_ws_text(new_page, make_server) -> None:
    with seed_site() as origin, seed_site() as elsewhere:
        server = make_server({"ALLOWED_ORIGINS": origin, "RATE_LIMIT": "4"})
        socket = urlencode({"socket": f"ws://{server.host}/ws/text"})
        ann = open_chat(new_page, server, "/?name=ann")
        say(ann, "before the seed came")
        expect(ann.locator("#log .msg:not(.pending)")).to_have_count(1)

        seed = new_page(f"{origin}/?{socket}")
        lines = seed.locator("#log div")
        expect(lines.nth(1)).to_have_text("ann: before the seed came")
        first = seed.evaluate("window.__frames[0]").split("\n")  # the welcome and the history: one frame
        guest = re.fullmatch(r"\* you are (guest-[0-9a-f]{4}) in #lobby, 2 here", first[0]).group(1)
        assert first[1] == "ann: before the seed came"
        expect(ann.locator("#log .system")).to_contain_text(f"{guest} joined")

        seed_say(seed, "hello from the seed's page")  # a raw text frame: a message to the room
        expect(ann.locator("#log .msg .body").last).to_have_text("hello from the seed's page")
        expect(ann.locator("#log .msg .who").last).to_have_text(guest)
        say(ann, "hi, <b>seed</b>")
        expect(lines.last).to_have_text("ann: hi, <b>seed</b>")

        # /ws's limits: a message's length, a connection's rate
        seed_say(seed, "x" * 2001)
        expect(lines.last).to_have_text("! a message may hold at most 2000 characters")
        for n in range(4):
            seed_say(seed, f"burst {n}")
        expect(seed.locator("#log div", has_text="! at most 4 messages per 10 s").first).to_be_visible()

        # /ws's origin rules: a page from another origin is refused at the handshake
        stranger = new_page(f"{elsewhere}/?{socket}")
        expect(stranger.locator("#log div")).to_have_text(["Connection closed."])
        seed.close()
        expect(ann.locator("#log .system").last).to_contain_text(f"{guest} left")
