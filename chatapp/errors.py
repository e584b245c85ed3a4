"""Errors: HTTP errors as JSON (`{"error": code, "detail": text}`), and Unavailable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException


class Unavailable(Exception):
    """A backend (the store, Redis) cannot be reached now; the same call may work later.
    Clients get an `unavailable` error event (or close 1013 on connect), HTTP gets 503."""


@contextmanager
def unavailable_on(what: str, *errors: type[Exception]) -> Iterator[None]:
    """Turn a backend's own errors into Unavailable (usable as a decorator)."""
    try:
        yield
    except errors as exc:
        raise Unavailable(f"{what} cannot be reached now; try again") from exc


def json_error(status: int, code: str, detail: str) -> Response:
    response = jsonify(error=code, detail=detail)
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    """Answer HTTP errors (404, 405...) with JSON for the API and the WebSocket endpoint."""

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable) -> Response:
        return json_error(503, "unavailable", str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        if request.path.startswith(("/api/", "/ws")):
            name = (exc.name or "error").lower().replace(" ", "_")
            return json_error(exc.code or 500, name, exc.description or "")
        return exc
