"""A token bucket: `rate` actions per `per` seconds, bursts up to `rate`."""

from __future__ import annotations

import ipaddress
from time import monotonic


def address_key(address: str) -> str:
    """What a per-address limit counts by: the address, or for IPv6 its /64 (one host or home
    network usually has a whole /64, and could take a new address per connection). An IPv4
    client seen as IPv6 (::ffff:a.b.c.d: gunicorn bound to [::], a dual-stack proxy) counts
    as its IPv4 address, not in the one /64 of every such client."""
    if ":" not in address:
        return address
    try:
        mapped = ipaddress.IPv6Address(address).ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    except ValueError:
        return address


class RateLimiter:
    """Owned by one connection's reader greenlet; not shared, so no lock."""

    __slots__ = ("_allowance", "_last", "per", "rate")

    def __init__(self, rate: int, per: float, now: float | None = None) -> None:
        self.rate = rate
        self.per = per
        self._allowance = float(rate)
        self._last = monotonic() if now is None else now

    def allow(self, now: float | None = None) -> bool:
        """Take one token if there is one."""
        now = monotonic() if now is None else now
        self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate / self.per)
        self._last = now
        if self._allowance < 1.0:
            return False
        self._allowance -= 1.0
        return True

    def full(self, now: float) -> bool:
        """Whether it has refilled by `now` (a new bucket would be the same)."""
        return now - self._last >= self.per


class KeyedRateLimiter:
    """A token bucket per key (a client address, say), for limits that a reconnect must not
    reset. Buckets that have filled up again are forgotten once there are more than
    `max_keys`, so memory follows the keys active within `per` seconds. Used from any greenlet
    of one worker: gevent switches only at I/O, never inside `allow`."""

    __slots__ = ("_buckets", "_sweep_at", "max_keys", "per", "rate")

    def __init__(self, rate: int, per: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.per = per
        self.max_keys = max_keys
        self._buckets: dict[str, RateLimiter] = {}
        self._sweep_at = max_keys  # sweep when there are this many (more, if all are active)

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take one token of `key`'s bucket if there is one."""
        now = monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._buckets = {k: b for k, b in self._buckets.items() if not b.full(now)}
                self._sweep_at = max(self.max_keys, 2 * len(self._buckets))  # a sweep per as many new keys
            bucket = self._buckets[key] = RateLimiter(self.rate, self.per, now)
        return bucket.allow(now)

    def __len__(self) -> int:
        return len(self._buckets)
