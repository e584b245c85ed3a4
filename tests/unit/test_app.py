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
