"""A realtime chat server: Flask + flask-sock + gevent under gunicorn."""

from __future__ import annotations

import os
import secrets

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from . import api, backends, errors, hosts, logs, views
from .chat import Chat
from .config import Config, ConfigError
from .listing import Listing
from .realtime import Realtime

__all__ = ["Config", "ConfigError", "create_app"]


class _CookieSessions(SecureCookieSessionInterface):
    """Flask's cookie sessions, opened without building their signer when the request sends
    no session cookie: every WebSocket connect and API call (no view sets one). Flask builds
    it for every request otherwise, 2% of a connect's CPU."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def create_app(config: Config | None = None) -> Flask:
    """Build the app. `config` defaults to the environment's (Config.from_env)."""
    config = config or Config.from_env()
    backends.check(config)
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
    app.session_interface = _CookieSessions()
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # a longer request body: 413, in JSON under /api/
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # UTF-8 as it is: "é", not the six bytes of "\u00e9"
    logs.configure(config.log_level, config.log_format)
    if config.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops, x_proto=config.proxy_hops)  # type: ignore[method-assign]

    # first: a request for another name goes no further
    hosts.init_app(app, config.allowed_hosts, config.loopback_hosts)
    clients = backends.Clients(config)  # one Redis client, shared by the three
    realtime = Realtime(config, backends.backplane(config, clients), backends.presence(config, clients))
    store = backends.store(config, clients, os.path.join(app.instance_path, "chat.sqlite3"))
    app.extensions["chat"] = Chat(realtime, store, config)  # its handlers first: init_app routes by them
    app.extensions["listing"] = Listing(realtime, store)
    realtime.init_app(app, path="/ws")
    errors.init_app(app)
    app.register_blueprint(views.bp)
    api.init_app(app, config)
    return app


MAX_BODY_BYTES = 64 * 1024  # a bot's post is a few KB (MAX_MESSAGE_CHARS of up to 4 bytes, JSON around it)
