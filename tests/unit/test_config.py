from __future__ import annotations

import pytest

from chatapp.config import Config, ConfigError


def test_defaults_from_an_empty_environment() -> None:
    config = Config.from_env({})
    assert config == Config()
    assert (config.port, config.max_message_chars, config.max_frame_bytes) == (8000, 2000, 16384)
    assert (config.send_queue_size, config.ping_interval, config.rate_limit) == (256, 25.0, 20)


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
        ({"REDIS_TLS_VERIFY": "maybe"}, "REDIS_TLS_VERIFY"),
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
