"""A realtime chat server: Flask + flask-sock + gevent under gunicorn."""

from __future__ import annotations

import os
import secrets
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import api, errors, logs, views
from .chat import Chat
from .config import Config, ConfigError
from .realtime import Realtime
from .store import Store

__all__ = ["Config", "ConfigError", "create_app"]


def create_app(config: Config | None = None) -> Flask:
    """Build the app. `config` defaults to the environment's (Config.from_env)."""
    config = config or Config.from_env()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    app = Flask(
        __name__,
        instance_path=os.path.join(root, "instance"),
        template_folder=os.path.join(root, "templates"),
        static_folder=os.path.join(root, "static"),
    )
    app.extensions["config"] = config
    app.config["SECRET_KEY"] = config.secret_key or secrets.token_hex(32)
    # No view sets a cookie (the page keeps the nickname in localStorage). Should one use
    # Flask's session, its cookie is out of scripts' reach, not sent cross-site, and only
    # sent over https (browsers count http://localhost and 127.0.0.1 as secure too).
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=True)
    logs.configure(config.log_level, config.log_format)
    if config.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops, x_proto=config.proxy_hops)  # type: ignore[method-assign]

    redis_client = _redis_client(config) if config.redis_url else None
    store: Store
    if redis_client is not None:
        from .realtime.backplane.redis import CHANNEL, RedisBackplane
        from .realtime.presence.redis import RedisPresence
        from .store.redis import RedisStore

        store = RedisStore(redis_client, config.history_limit, channel=CHANNEL)  # it publishes messages
        realtime = Realtime(config, RedisBackplane(redis_client), RedisPresence(redis_client, config.presence_ttl))
    else:
        from .store.sqlite import SQLiteStore

        store = SQLiteStore(
            config.database_path or os.path.join(app.instance_path, "chat.sqlite3"), config.history_limit
        )
        realtime = Realtime(config)
    realtime.init_app(app, path="/ws")
    app.extensions["chat"] = Chat(realtime, store, config)
    errors.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    return app


REDIS_CONNECTIONS = 50  # per worker; one is the listener's for good
REDIS_POOL_WAIT = 5.0  # seconds a command may wait for a connection, then Unavailable


def _redis_client(config: Config) -> Any:
    import redis

    options: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "health_check_interval": 10}
    if config.redis_url and config.redis_url.startswith("rediss://") and not config.redis_tls_verify:
        options["ssl_cert_reqs"] = "none"  # REDIS_TLS_VERIFY=0: managed Redis with a self-signed chain
    # A pool that makes a greenlet wait for a free connection: redis-py's default pool refuses
    # the 101st concurrent command (MaxConnectionsError), which a connect burst reaches at once.
    pool = redis.BlockingConnectionPool.from_url(
        config.redis_url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_POOL_WAIT, **options
    )
    return redis.Redis(connection_pool=pool)
