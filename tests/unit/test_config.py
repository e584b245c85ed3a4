from __future__ import annotations

import pytest

from chatapp.config import Config, ConfigError


def test_defaults_from_an_empty_environment() -> None:
    config = Config.from_env({})
    assert config == Config(allowed_hosts=("localhost", "127.0.0.1", "::1"))  # no PORT: a local server
    assert (config.port, config.max_message_chars, config.max_frame_bytes) == (8000, 2000, 16384)
    assert (config.send_queue_size, config.ping_interval, config.rate_limit) == (256, 25.0, 20)


def test_behind_a_platforms_router_its_forwarded_address_is_trusted() -> None:
    """A platform that sets PORT has its router in front: without trusting it, every client
    would have the router's address (and share one address's limits)."""
    assert Config.from_env({"PORT": "5000"}).proxy_hops == 1
    assert Config.from_env({"PORT": "5000", "PROXY_HOPS": "0"}).proxy_hops == 0
    assert Config.from_env({}).proxy_hops == 0


def test_a_local_server_answers_to_loopback_names_and_a_platforms_to_any() -> None:
    assert Config.from_env({}).allowed_hosts == ("localhost", "127.0.0.1", "::1")
    assert Config.from_env({"PORT": "5000"}).allowed_hosts == ()
    assert Config.from_env({"PORT": "5000"}).loopback_hosts == ("localhost", "127.0.0.1", "::1")
    assert Config.from_env({"PORT": "5000", "ALLOWED_HOSTS": "*"}).loopback_hosts == ()
    assert Config.from_env({"ALLOWED_HOSTS": "Chat.Example.com, .example.org,[::1]"}).allowed_hosts == (
        "chat.example.com",
        ".example.org",
        "::1",
    )
    assert Config.from_env({"ALLOWED_HOSTS": "*"}).allowed_hosts == ()


def test_values_are_read_and_converted() -> None:
    config = Config.from_env(
        {
            "PORT": "9000",
            "PING_INTERVAL": "2.5",
            "ALLOWED_ORIGINS": "https://A.example, http://b.example:8080/",
            "REDIS_TLS_VERIFY": "0",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "JSON",
            "CHAT_API_TOKEN": "t0k",
        }
    )
    assert config.port == 9000 and config.ping_interval == 2.5
    assert config.allowed_origins == ("https://a.example", "http://b.example:8080")
    assert config.redis_tls_verify is False and config.log_level == "DEBUG" and config.chat_api_token == "t0k"
    assert config.log_format == "json"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAX_FRAME_BYTES": "0"}, "MAX_FRAME_BYTES"),
        ({"SEND_QUEUE_SIZE": "-1"}, "SEND_QUEUE_SIZE"),
        ({"PING_INTERVAL": "0"}, "PING_INTERVAL"),
        ({"WRITE_TIMEOUT": "nan"}, "WRITE_TIMEOUT"),
        ({"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS"),
        ({"ALLOWED_HOSTS": "https://chat.example.com"}, "ALLOWED_HOSTS"),
        ({"ALLOWED_HOSTS": "chat.example.com:443"}, "ALLOWED_HOSTS"),
        ({"REDIS_TLS_VERIFY": "maybe"}, "REDIS_TLS_VERIFY"),
        ({"REDIS_URL": "redis://host:notaport/0"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://host:99999"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://host/zero"}, "REDIS_URL"),
        ({"REDIS_URL": "redis:///0"}, "REDIS_URL"),
        ({"REDIS_URL": "unix://"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://host/0?socket_timeout=soon"}, "REDIS_URL"),
        ({"REDIS_CLUSTER": "1"}, "REDIS_CLUSTER"),
        ({"REDIS_CLUSTER": "1", "REDIS_URL": "redis://host:7000/2"}, "REDIS_URL"),
        ({"REDIS_CLUSTER": "1", "REDIS_URL": "unix:///run/r.sock"}, "REDIS_URL"),
        ({"DATABASE_URL": "sqlite:///chat.sqlite3", "DATABASE_PATH": "chat.sqlite3"}, "DATABASE_URL"),
        ({"PROXY_HOPS": "-1"}, "PROXY_HOPS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"HISTORY_ON_JOIN": "60", "HISTORY_LIMIT": "50"}, "HISTORY_ON_JOIN"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Config.from_env(env)


@pytest.mark.parametrize(
    "url",
    ["redis://localhost", "redis://:secret@h.example:6380/2", "rediss://u:p@h.example:25061/0", "unix:///run/r.sock"],
)
def test_redis_urls_of_every_kind_are_accepted(url: str) -> None:
    assert Config.from_env({"REDIS_URL": url}).redis_url == url
