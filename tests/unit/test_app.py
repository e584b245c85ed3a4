"""The application factory's settings that no request shows today (no view sets a cookie)."""

from __future__ import annotations

from pathlib import Path

from flask import session

from chatapp import Config, create_app


def test_a_session_cookie_would_be_secure_httponly_and_same_site(tmp_path: Path) -> None:
    app = create_app(Config(database_path=str(tmp_path / "chat.sqlite3")))

    @app.get("/set-session")
    def set_session() -> str:
        session["seen"] = True
        return "ok"

    response = app.test_client().get("/set-session", base_url="https://chat.example")
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_session_set_by_a_view_comes_back_and_one_not_sent_is_empty(tmp_path: Path) -> None:
    """Sessions are opened lazily (no signer built for a request without the cookie), and
    still carry what a view put in them, and nothing forged."""
    app = create_app(Config(database_path=str(tmp_path / "chat.sqlite3")))

    @app.get("/set-session")
    def set_session() -> str:
        session["seen"] = True
        return "ok"

    @app.get("/get-session")
    def get_session() -> str:
        return repr(session.get("seen"))

    client = app.test_client()
    assert client.get("/get-session", base_url="https://chat.example").text == "None"
    client.get("/set-session", base_url="https://chat.example")
    assert client.get("/get-session", base_url="https://chat.example").text == "True"
    client.set_cookie("session", "forged", domain="chat.example")
    assert client.get("/get-session", base_url="https://chat.example").text == "None"
