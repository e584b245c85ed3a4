"""The realtime layer: rooms that connections join, `emit` to a room from any code, handlers
per event type; one Hub per worker, a backplane between workers, presence across them.

It knows nothing of chat (import-linter checks it: pyproject.toml). What an app uses is
here; the Hub, the backplane and presence stay inside (server.py's docstring has the map).
"""

from .client import Connection
from .handshake import Refused, Upgrade
from .presence import Info
from .protocol import CloseCode, ErrorCode, ProtocolError, error_event, is_unicode
from .server import Health, Realtime

__all__ = [
    "CloseCode",
    "Connection",
    "ErrorCode",
    "Health",
    "Info",
    "ProtocolError",
    "Realtime",
    "Refused",
    "Upgrade",
    "error_event",
    "is_unicode",
]
