"""A realtime chat server: Flask + flask-sock + gevent under gunicorn."""

from __future__ import annotations

import logging
import os
import secrets

from flask import Flask

from . import api, errors, views
from .chat import Chat
from .config import Config, ConfigError
from .realtime import Realtime
from .store import SQLiteStore

__all__ = ["Config", "ConfigError", "create_app"]


def create_app(config: Config | None = None) -> Flask:
    """Build the app. `config` defaults to the environment's (Config.from_env)."""
    config = config or Config.from_env()
    if config.redis_url:
        raise ConfigError("REDIS_URL is set, but the Redis backplane is not in this version yet")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    app = Flask(
        __name__,
        instance_path=os.path.join(root, "instance"),
        template_folder=os.path.join(root, "templates"),
        static_folder=os.path.join(root, "static"),
    )
    app.config["SECRET_KEY"] = config.secret_key or secrets.token_hex(32)
    _configure_logging(config.log_level)

    store = SQLiteStore(config.database_path or os.path.join(app.instance_path, "chat.sqlite3"), config.history_limit)
    realtime = Realtime(config)
    realtime.init_app(app, path="/ws")
    app.extensions["chat"] = Chat(realtime, store)
    errors.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    return app


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("chatapp")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
