"""The layer's own before-upgrade hooks, on Upgrade values (no Flask)."""

from __future__ import annotations

import pytest

from chatapp.realtime.handshake import (
    PerAddressCap,
    PerAddressRate,
    Refused,
    Upgrade,
    WorkerCap,
    check_handshake,
    check_origin,
    deflate_offers,
)

GOOD = {
    "Host": "chat.example:8000",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def upgrade(
    headers: dict[str, str] | None = None, address: str = "127.0.0.2", host: str = "chat.example:8000", scheme="http"
) -> Upgrade:
    return Upgrade(path="/ws", headers=headers or {}, cookies={}, address=address, host=host, scheme=scheme)


def refusal(hook, value: Upgrade) -> tuple[int, str, dict[str, str]]:
    with pytest.raises(Refused) as refused:
        hook(value)
    return refused.value.status, refused.value.error, refused.value.headers


@pytest.mark.parametrize(
    ("change", "error", "headers"),
    [
        ({"Upgrade": "h2c"}, "not_websocket", {}),
        ({"Sec-WebSocket-Version": "8"}, "bad_version", {"Sec-WebSocket-Version": "13"}),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, "bad_key", {}),
        ({"Sec-WebSocket-Key": "not base64!"}, "bad_key", {}),
        ({"Host": ""}, "bad_host", {}),
    ],
)
def test_a_handshake_that_breaks_rfc_6455_is_a_400(change: dict, error: str, headers: dict) -> None:
    check_handshake(upgrade(GOOD))
    assert refusal(check_handshake, upgrade({**GOOD, **change})) == (400, error, headers)


def test_an_origin_must_be_the_requests_own_or_allowed() -> None:
    """The same scheme, host and port (RFC 6454), a default port being the same as none."""
    check = check_origin(("https://app.example",))
    for origin in (None, "http://chat.example:8000", "HTTP://Chat.Example:8000/", "https://app.example:443"):
        check(upgrade({"Origin": origin} if origin else {}))
    refused = ["https://evil.example", "http://chat.example", "https://chat.example:8000", "ftp://chat.example:8000"]
    for origin in [*refused, "null", "http://chat.example:port", "http://[::1"]:
        assert refusal(check, upgrade({"Origin": origin}))[:2] == (403, "bad_origin")
    check(upgrade({"Origin": "https://chat.example"}, host="chat.example:443", scheme="https"))  # behind TLS
    check(upgrade({"Origin": "http://chat.example:80"}, host="chat.example"))
    assert refusal(check, upgrade({"Origin": "http://chat.example"}, host="chat.example", scheme="https"))[0] == 403


def test_connects_per_address_are_paced() -> None:
    """A client that connects and closes in a loop: past the limit in the window, 429."""
    pace = PerAddressRate(3, 10.0)
    for _ in range(3):
        pace(upgrade())
    assert refusal(pace, upgrade()) == (429, "too_many_connects", {"Retry-After": "10"})
    pace(upgrade(address="127.0.0.3"))  # another address counts apart
    off = PerAddressRate(0, 10.0)
    for _ in range(10):
        off(upgrade())


def test_connections_per_address_are_capped_until_a_request_ends() -> None:
    cap = PerAddressCap(2)
    first, second = upgrade(), upgrade()
    cap(first)
    cap(second)
    cap(upgrade(address="127.0.0.3"))  # another address counts apart
    assert refusal(cap, upgrade()) == (429, "too_many_connections", {"Retry-After": "10"})
    first.end()
    cap(upgrade())
    second.end()
    assert cap.open == {"127.0.0.2": 1, "127.0.0.3": 1}


def test_a_worker_holding_its_cap_of_connections_refuses_more_with_503() -> None:
    running = [2]
    cap = WorkerCap(2, lambda: running[0])
    assert refusal(cap, upgrade()) == (503, "server_full", {"Retry-After": "10"})
    running[0] = 1
    cap(upgrade())
    WorkerCap(0, lambda: 10**9)(upgrade())  # 0: no cap


def test_no_cap_counts_nothing() -> None:
    cap = PerAddressCap(0)
    for _ in range(5):
        cap(upgrade())
    assert cap.open == {}


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("permessage-deflate", "permessage-deflate"),
        (
            "permessage-deflate; client_max_window_bits, permessage-deflate; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits, permessage-deflate; server_no_context_takeover",
        ),
        ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
        ("permessage-deflate; client_max_window_bits=abc", ""),  # int("abc") in wsproto: a 500
        ("permessage-deflate; server_max_window_bits=99", ""),  # zlib has no such window
        ("permessage-deflate; server_max_window_bits", ""),  # its size is not optional
        ('permessage-deflate; client_max_window_bits="10"', ""),
        ("permessage-deflate; client_no_context_takeover=1", ""),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", ""),
        ("permessage-deflate; x-unknown", ""),
        ("permessage-deflate; client_max_window_bits=٣", ""),  # a digit to str.isdigit, not ASCII
        (
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=abc, permessage-deflate",
            "permessage-deflate",
        ),
        ("", ""),
    ],
)
def test_only_well_formed_deflate_offers_are_kept(header: str, kept: str) -> None:
    """A malformed offer is declined (RFC 7692, 5): the connection goes on uncompressed."""
    assert deflate_offers(header) == kept
