"""Log lines: text for a person at a terminal, or one JSON object per line (LOG_FORMAT=json,
python-json-logger) for a log pipeline, the same for the app's lines and gunicorn's.

The app's lines for a connection's life carry fields beside the message (`extra`): `event`
(connect, close, drop, refused), `conn`, `addr`, and for a close `code` and `reason`. In JSON
they are keys of the object. No line holds a secret: tokens, SECRET_KEY, REDIS_URL (it may
hold a password) and message text are never logged.
"""

from __future__ import annotations

import logging
from typing import Any

TEXT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(process)d %(message)s"
JSON_NAMES = {"levelname": "level", "name": "logger", "process": "pid"}


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of LOG_FORMAT (text or json)."""
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES, timestamp="time")
    return logging.Formatter(TEXT)


def configure(level: str, log_format: str) -> None:
    """The app's logger ("chatapp"): LOG_LEVEL, LOG_FORMAT, to stderr; set up once per process."""
    logger = logging.getLogger("chatapp")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter(log_format))
        logger.addHandler(handler)
        logger.propagate = False


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """gunicorn's `logconfig_dict` for LOG_FORMAT=json (gunicorn's own lines in JSON too); empty
    for text (gunicorn's default format)."""
    if log_format != "json":
        return {}
    json_formatter = {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": JSON_FIELDS,
        "rename_fields": JSON_NAMES,
        "timestamp": "time",
    }
    # gunicorn merges this over its defaults key by key, and its default loggers propagate to
    # the root logger, which has a handler too: each line would come out twice. Not here.
    return {
        "formatters": {"json": json_formatter},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }
