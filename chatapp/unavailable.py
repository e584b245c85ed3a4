"""Unavailable: a backend (the store, Redis) cannot be reached now; the same call may work later.

Raised by the stores, the backplane's and presence's Redis calls, and the chat; the realtime
layer turns it into an `unavailable` error event (close 1013 on connect), HTTP into a 503
(errors.py). No Flask here: the backends that raise it import none.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Unavailable(Exception):
    """A backend cannot be reached now; the same call may work later."""


@contextmanager
def unavailable_on(what: str, *errors: type[Exception]) -> Iterator[None]:
    """Turn a backend's own errors into Unavailable (usable as a decorator)."""
    try:
        yield
    except errors as exc:
        raise Unavailable(f"{what} cannot be reached now; try again") from exc
