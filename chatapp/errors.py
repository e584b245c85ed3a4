"""HTTP errors as JSON (`{"error": code, "detail": text}`), Unavailable (unavailable.py) as a 503."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .unavailable import Unavailable


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
