"""The realtime layer: rooms that connections join, `emit` to a room from any code, handlers
per event type; one Hub per worker, a backplane between workers, presence across them.

It knows nothing of chat (import-linter checks it: pyproject.toml). What an app uses is
here; the Hub, the backplane and presence stay inside.
"""

from .client import Connection
from .presence import Info
from .protocol import CloseCode, ErrorCode, ProtocolError, error_event
from .server import Realtime

__all__ = ["CloseCode", "Connection", "ErrorCode", "Info", "ProtocolError", "Realtime", "error_event"]
