"""Configuration: every setting comes from one environment variable, read and checked here once.

A bad value stops start-up with a message that names the variable (ConfigError), so an operator
never meets a worker that boots and then misbehaves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any


class ConfigError(ValueError):
    """A setting has a value that cannot work; the message names the variable."""


@dataclass(frozen=True)
class Config:
    """Settings of one app. Field names are the variable names in lower case."""

    port: int = 8000
    redis_url: str | None = None
    redis_cluster: bool = False  # 1: REDIS_URL names a node of a Redis Cluster (sharded pub/sub)
    redis_tls_verify: bool = True  # 0: accept a rediss:// server's self-signed certificate chain
    ws_deflate: bool = False  # 1: permessage-deflate with clients that offer it (see README: off is faster)
    database_path: str | None = None  # None: chat.sqlite3 in Flask's instance folder
    database_url: str | None = None  # the store by URL (backends.py): sqlite:///path, redis://...
    allowed_origins: tuple[str, ...] = ()  # besides the page's own host
    # The names this server answers to (the Host of a request; a leading dot takes subdomains);
    # others get 400 (DNS rebinding). Unset: any when the platform sets PORT (its router has
    # chosen the app by name already), else the loopback names, where a local server listens.
    allowed_hosts: tuple[str, ...] = ()  # () : any
    # Unset with PORT: a request that comes in on a loopback address must still be for one of
    # these (a server run locally with PORT, `heroku local`, must not answer a rebound name);
    # a platform's router never connects there.
    loopback_hosts: tuple[str, ...] = ()
    connect_rate_limit: int = 100  # WebSocket upgrades per 10 s per client address, on one worker (0: no cap)
    max_message_chars: int = 2000
    max_frame_bytes: int = 16384
    history_limit: int = 1000
    history_idle_days: float = 30.0  # a room's history goes after this many days without a message (0: kept)
    history_on_join: int = 50
    send_queue_size: int = 256
    send_queue_bytes: int = 1024 * 1024  # what one client's queue may hold, in payload bytes (past it: 1013)
    # The writer pings every PING_INTERVAL seconds (under the 55 s idle timeout of PaaS
    # routers); a peer silent for PING_INTERVAL + PONG_TIMEOUT is taken as gone.
    ping_interval: float = 25.0
    pong_timeout: float = 20.0
    write_timeout: float = 10.0
    rate_limit: int = 20  # chat messages per 10 s per connection
    frame_rate_limit: int = 100  # frames of any kind, and reads that make none, per 10 s per connection (0: no limit)
    address_rate_limit: int = 200  # chat messages per 10 s per client address, on one worker (0: no limit)
    # Reads of the JSON API (history pages, the rooms online) per second per client address, on
    # one worker (0: no limit); past it HTTP 429. A page reads a few every 30 s; a history page
    # of 500 messages costs the worker some 3 ms, and one client reading in a loop on 32
    # connections held a talking pair's messages for 116-156 ms (p50) without it.
    api_rate_limit: int = 30
    announce_limit: int = 10  # joins (and their leaves) told per 10 s per client address; more are silent
    # Open WebSockets per client address on one worker (0: no cap); past it, HTTP 429 before
    # the upgrade. An office or a mobile carrier can put many people behind one address.
    max_connections_per_ip: int = 100
    # Open WebSockets on one worker (0: no cap); past it, HTTP 503 before the upgrade, so that
    # a load balancer can try another worker. Each costs a file descriptor (`ulimit -n`).
    max_connections: int = 20000
    chat_echo_route: bool = False  # 1: /ws/echo echoes every message (for conformance suites)
    max_rooms: int = 10000  # rooms with clients on one worker (0: no cap); a new one past it is refused
    chat_api_token: str | None = None
    secret_key: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"  # json: one JSON object per line (logs.py)
    presence_ttl: float = 30.0  # with Redis: a dead worker's clients leave presence within this
    # Proxies in front whose X-Forwarded-For/-Proto to trust. Unset: 1 when the platform sets
    # PORT (a PaaS: its router is in front, and without it every client would have the
    # router's address, and share one address's limits), else 0.
    proxy_hops: int = 0
    # Where every worker writes its metrics (gunicorn.conf.py sets it); None: this process's alone
    prometheus_multiproc_dir: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read every setting from `environ` (default: os.environ); unset or empty means default."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = field.name.upper()
            raw = environ.get(name, "").strip()
            if not raw:
                continue
            parse = _PARSERS[field.name]
            try:
                values[field.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r}: {exc}") from None
        if "proxy_hops" not in values and environ.get("PORT", "").strip():
            values["proxy_hops"] = 1
        if "allowed_hosts" not in values:
            values["loopback_hosts" if environ.get("PORT", "").strip() else "allowed_hosts"] = LOOPBACK_NAMES
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Raise ConfigError, naming the variable, for values that parse but cannot work."""
        for name, low in (
            ("port", 1),
            ("max_message_chars", 1),
            ("max_frame_bytes", 64),
            ("history_limit", 1),
            ("history_on_join", 0),
            ("history_idle_days", 0),
            ("send_queue_size", 1),
            ("send_queue_bytes", 1024),
            ("rate_limit", 1),
            ("frame_rate_limit", 0),
            ("address_rate_limit", 0),
            ("api_rate_limit", 0),
            ("announce_limit", 0),
            ("max_connections_per_ip", 0),
            ("max_connections", 0),
            ("connect_rate_limit", 0),
            ("max_rooms", 0),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"{name.upper()} must be at least {low}")
        if self.port > 65535:
            raise ConfigError("PORT must be at most 65535")
        if self.proxy_hops < 0:
            raise ConfigError("PROXY_HOPS must be 0 or more")
        if self.redis_url is not None:
            _check_redis_url(self.redis_url, self.redis_cluster)
        elif self.redis_cluster:
            raise ConfigError("REDIS_CLUSTER=1 needs REDIS_URL: any node of the cluster, like redis://10.0.0.1:6379")
        if self.database_url and self.database_path:
            raise ConfigError("DATABASE_URL and DATABASE_PATH both name the store: set one of them")
        if self.history_on_join > self.history_limit:
            raise ConfigError("HISTORY_ON_JOIN must not exceed HISTORY_LIMIT")
        for name in ("ping_interval", "pong_timeout", "write_timeout", "presence_ttl"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name.upper()} must be a positive number of seconds")
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        if self.log_format not in {"text", "json"}:
            raise ConfigError("LOG_FORMAT must be text or json")


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return value


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected 1 or 0")


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _hosts(raw: str) -> tuple[str, ...]:
    if raw == "*":
        return ()
    hosts = tuple(part.strip().lower().removeprefix("[").removesuffix("]") for part in raw.split(",") if part.strip())
    for host in hosts:
        if not host or any(c in host for c in "/@ ") or (":" in host and not _is_ipv6(host)):
            raise ValueError(f"{host!r} is not a host name like chat.example.com (no scheme or port), or *")
    return hosts


def _is_ipv6(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(part.strip().lower().rstrip("/") for part in raw.split(",") if part.strip())
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if scheme not in {"http", "https"} or not sep or not host or "/" in host:
            raise ValueError(f"{origin!r} is not an origin like https://chat.example.com")
    return origins


def _check_redis_url(url: str, cluster: bool) -> None:
    """Refuse a REDIS_URL that redis-py could not use, before a worker tries (with its own words:
    redis-py's parser, plus the database number it would silently ignore). Its scheme is
    backends.check's."""
    from urllib.parse import urlsplit

    from redis.connection import parse_url

    if not url.startswith(("redis://", "rediss://", "unix://")):
        return  # not a Redis URL: backends.check names the schemes it takes
    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL is not a Redis URL: {exc}") from None
    parts = urlsplit(url)
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError("REDIS_URL: a unix:// URL needs the socket's path, like unix:///run/redis.sock")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError("REDIS_URL must name a host, like redis://host:6379/0")
    database = parts.path.lstrip("/") if parts.scheme != "unix" else ""
    if database and not (database.isascii() and database.isdigit()):
        raise ConfigError(f"REDIS_URL: the database must be a number, not {database!r}")
    if cluster and (parts.scheme == "unix" or database.strip("0")):
        raise ConfigError(
            "REDIS_URL: with REDIS_CLUSTER=1, a node's redis:// or rediss:// address (a cluster has database 0 only)"
        )


def _text(raw: str) -> str:
    return raw


_PARSERS: dict[str, Callable[[str], Any]] = {
    "port": _integer,
    "redis_url": _text,
    "redis_cluster": _flag,
    "redis_tls_verify": _flag,
    "ws_deflate": _flag,
    "database_path": _text,
    "database_url": _text,
    "allowed_origins": _origins,
    "allowed_hosts": _hosts,
    "connect_rate_limit": _integer,
    "max_message_chars": _integer,
    "max_frame_bytes": _integer,
    "history_limit": _integer,
    "history_idle_days": _number,
    "history_on_join": _integer,
    "send_queue_size": _integer,
    "send_queue_bytes": _integer,
    "ping_interval": _number,
    "pong_timeout": _number,
    "write_timeout": _number,
    "rate_limit": _integer,
    "frame_rate_limit": _integer,
    "address_rate_limit": _integer,
    "api_rate_limit": _integer,
    "announce_limit": _integer,
    "max_connections_per_ip": _integer,
    "max_connections": _integer,
    "max_rooms": _integer,
    "chat_echo_route": _flag,
    "chat_api_token": _text,
    "secret_key": _text,
    "log_level": str.upper,
    "log_format": str.lower,
    "presence_ttl": _number,
    "proxy_hops": _integer,
    "prometheus_multiproc_dir": _text,
}
