"""A token bucket: `rate` actions per `per` seconds, bursts up to `rate`."""

from __future__ import annotations

from time import monotonic


class RateLimiter:
    """Owned by one connection's reader greenlet; not shared, so no lock."""

    __slots__ = ("_allowance", "_last", "per", "rate")

    def __init__(self, rate: int, per: float) -> None:
        self.rate = rate
        self.per = per
        self._allowance = float(rate)
        self._last = monotonic()

    def allow(self, now: float | None = None) -> bool:
        """Take one token if there is one."""
        now = monotonic() if now is None else now
        self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate / self.per)
        self._last = now
        if self._allowance < 1.0:
            return False
        self._allowance -= 1.0
        return True
