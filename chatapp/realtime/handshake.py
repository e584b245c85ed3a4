"""Before the upgrade: what a hook sees of the request (Upgrade), how it refuses (Refused), and
the layer's own hooks, which run first: RFC 6455's handshake checks, the Origin check, and the
cap on open connections per client address.

A hook is `hook(upgrade)`, run in the request's greenlet before flask-sock answers the
handshake. It returns to let the request through, or raises Refused: the client then gets that
HTTP status and `{"error": ..., "detail": ...}`, and no WebSocket. An app checks there who may
connect (a cookie, a token in a header: `Realtime.before_upgrade`); what it learns it puts in
`upgrade.data`, which the connection starts with as `conn.data`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..ratelimit import KeyedRateLimiter, address_key


class Refused(Exception):
    """Raised by a before-upgrade hook: the request is answered with `status` and a JSON body
    `{"error": error, "detail": detail}`, with `headers` added, and never upgraded."""

    def __init__(self, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})


@dataclass(eq=False)
class Upgrade:
    """An upgrade request as the before-upgrade hooks see it, in the request's greenlet."""

    path: str
    # The request's headers (names in any case) and cookies, for the hooks: after them only the
    # handshake's headers are left (endpoint.HANDSHAKE_HEADERS), and none once it is answered
    # (forget_request), so that a connection does not keep its request.
    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    address: str  # the client's address (the proxy's X-Forwarded-For with PROXY_HOPS)
    host: str  # the Host the client asked for, in lower case
    scheme: str = "http"  # the request's: http, or https (behind a proxy that says so, with PROXY_HOPS)
    data: dict[str, Any] = field(default_factory=dict)  # becomes the connection's `data`
    _at_end: list[Callable[[], None]] = field(default_factory=list)

    def at_end(self, callback: Callable[[], None]) -> None:
        """Run `callback` when this request ends, however it ends: refused by a later hook,
        or upgraded and, much later, closed."""
        self._at_end.append(callback)

    def forget_request(self) -> None:
        """The handshake is answered (the layer calls this): drop the request's headers and
        cookies. The headers are werkzeug's view of the WSGI environ, which holds the whole
        request (gunicorn's parser and buffers, its socket object): kept, they would live as
        long as the connection."""
        self.headers = {}
        self.cookies = {}

    def end(self) -> None:
        """The request is over (the layer calls this): the `at_end` callbacks run, last first."""
        while self._at_end:
            self._at_end.pop()()


Hook = Callable[[Upgrade], None]


def check_handshake(upgrade: Upgrade) -> None:
    """RFC 6455 (4.2.1): a Host, an upgrade to WebSocket, version 13, a key of 16 bytes in base64;
    else 400. (Without a Host, simple-websocket's handshake would fail: a 500 and a traceback.)"""
    headers = upgrade.headers
    if not headers.get("Host", "").strip():
        raise Refused(400, "bad_host", "a Host header is required")
    if headers.get("Upgrade", "").lower() != "websocket":
        raise Refused(400, "not_websocket", "this endpoint speaks WebSocket only")
    if headers.get("Sec-WebSocket-Version") != "13":
        raise Refused(400, "bad_version", "Sec-WebSocket-Version must be 13", {"Sec-WebSocket-Version": "13"})
    try:
        key_ok = len(base64.b64decode(headers.get("Sec-WebSocket-Key", ""), validate=True)) == 16
    except binascii.Error:
        key_ok = False
    if not key_ok:
        raise Refused(400, "bad_key", "Sec-WebSocket-Key must be 16 bytes in base64")


def check_origin(allowed: tuple[str, ...]) -> Hook:
    """A page of another site may not open the socket (flask-sock has no such check): an Origin,
    when sent (browsers always send one), must be the request's own origin (the same scheme,
    host and port, as RFC 6454 compares them: http://a and http://a:80 are one) or one of
    `allowed` (ALLOWED_ORIGINS); else 403."""
    allowed_origins = {_origin(origin) for origin in allowed}

    def check(upgrade: Upgrade) -> None:
        origin = upgrade.headers.get("Origin")
        if origin is None:
            return
        parsed = _origin(origin)
        if parsed is None or (
            parsed not in allowed_origins and parsed != _origin(f"{upgrade.scheme}://{upgrade.host}")
        ):
            raise Refused(403, "bad_origin", f"origin {origin} may not open this socket"[:300])

    return check


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, the port filled in; None for anything else
    (`null`, another scheme, a malformed one)."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port


DEFAULT_PORTS = {"http": 80, "https": 443}

# permessage-deflate's parameters (RFC 7692, 7.1): name -> whether it takes a window size
# (8 to 15), which client_max_window_bits may leave out
_DEFLATE_PARAMETERS = {
    "server_no_context_takeover": False,
    "client_no_context_takeover": False,
    "server_max_window_bits": True,
    "client_max_window_bits": True,
}


def deflate_offers(header: str) -> str:
    """Of a Sec-WebSocket-Extensions header, the permessage-deflate offers that are well formed,
    as one header ("" for none). A server declines an offer with an unknown or malformed
    parameter (RFC 7692, 5 and 7); wsproto, which would parse it, fails on one (int("abc"), a
    window of 99 for zlib) with a 500 and a traceback. Other extensions: none is offered back."""
    kept = []
    for offer in header.split(","):
        name, *parameters = (part.strip() for part in offer.split(";"))
        if name == "permessage-deflate" and _well_formed(parameters):
            kept.append(offer.strip())
    return ", ".join(kept)


def _well_formed(parameters: list[str]) -> bool:
    seen = set()
    for parameter in parameters:
        name, equals, value = (part.strip() for part in parameter.partition("="))
        sized = _DEFLATE_PARAMETERS.get(name)
        if sized is None or name in seen:
            return False
        seen.add(name)
        if equals and not (sized and value.isascii() and value.isdigit() and 8 <= int(value) <= 15):
            return False
        if not equals and name == "server_max_window_bits":  # its size is not optional
            return False
    return True


class WorkerCap:
    """At most `limit` open WebSockets on this worker (0: no cap), counted by `running`; past
    it, 503 with Retry-After, before the upgrade (a load balancer may try another worker).
    Upgrades under way are not counted yet: a burst may pass it by those in flight (at most
    gunicorn's worker_connections)."""

    RETRY_AFTER = "10"  # seconds, in the 503's Retry-After

    def __init__(self, limit: int, running: Callable[[], int]) -> None:
        self.limit = limit
        self._running = running

    def __call__(self, upgrade: Upgrade) -> None:
        if self.limit and self._running() >= self.limit:
            raise Refused(
                503,
                "server_full",
                f"this server holds {self.limit} connections; try again later",
                {"Retry-After": self.RETRY_AFTER},
            )


class PerAddressRate:
    """At most `limit` upgrades per `per` seconds per client address on this worker (0: no cap),
    whether or not they stay open: a client that connects and closes in a loop is slowed to
    this pace. Past it, 429 with Retry-After."""

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self._upgrades = KeyedRateLimiter(limit, per) if limit else None

    def __call__(self, upgrade: Upgrade) -> None:
        if self._upgrades is not None and not self._upgrades.allow(address_key(upgrade.address)):
            raise Refused(
                429,
                "too_many_connects",
                f"at most {self.limit} connections per {self.per:.0f} s from one address",
                {"Retry-After": f"{self.per:.0f}"},
            )


class PerAddressCap:
    """At most `limit` open WebSockets per client address on this worker (0: no cap); past it,
    429 with Retry-After. A request counts against its address from this hook until it ends."""

    RETRY_AFTER = "10"  # seconds, in the 429's Retry-After

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # address -> requests counted now. Changed only by request greenlets, in this hook and
        # at their request's end; gevent switches only at I/O, so no lock.
        self.open: dict[str, int] = {}

    def __call__(self, upgrade: Upgrade) -> None:
        if not self.limit:
            return
        address = address_key(upgrade.address)
        if self.open.get(address, 0) >= self.limit:
            raise Refused(
                429,
                "too_many_connections",
                f"at most {self.limit} connections from one address",
                {"Retry-After": self.RETRY_AFTER},
            )
        self.open[address] = self.open.get(address, 0) + 1
        upgrade.at_end(lambda: self._release(address))

    def _release(self, address: str) -> None:
        left = self.open.pop(address) - 1
        if left:
            self.open[address] = left
