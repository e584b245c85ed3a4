"""The pages (the chat, /info), the health check and /metrics."""

from __future__ import annotations

import os

from flask import Blueprint, Response, abort, current_app, jsonify, render_template

from . import metrics
from .chat import parse_room
from .realtime import ProtocolError, Realtime

bp = Blueprint("views", __name__)

# No inline script or style anywhere on the page, so the policy can forbid them.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.get("/")
def index() -> Response:
    return _page("lobby")


@bp.get("/r/<room>")
def room(room: str) -> Response:
    try:
        return _page(parse_room(room))
    except ProtocolError:
        abort(404)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The page's icon, for whatever asks for it by the old name (the page links the SVG)."""
    return current_app.send_static_file("favicon.svg")


@bp.after_app_request
def _nosniff(response: Response) -> Response:
    """Every response, JSON, static files, errors and refusals too: never sniffed as another type."""
    if "X-Content-Type-Options" not in response.headers:  # not setdefault: werkzeug's raises and catches a KeyError
        response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _page(room: str) -> Response:
    return _secure(Response(render_template("index.html", room=room)))


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    health = _realtime().health()
    status = 200 if health.healthy else 503
    body = {
        "status": "ok" if status == 200 else "degraded",
        "pid": os.getpid(),
        "connections": health.connections,
        "rooms": health.rooms,
        "subscriptions": health.subscriptions,
        "backplane": health.backplane,
        "dropped_slow": health.dropped_slow,
    }
    return jsonify(body), status


@bp.get("/metrics")
def prometheus() -> Response:
    """Prometheus text format: every worker's figures added up (metrics.py)."""
    body, content_type = metrics.exposition(current_app.extensions["config"].prometheus_multiproc_dir)
    return Response(body, content_type=content_type)


@bp.get("/info")
def info() -> Response:
    """The live figures, for a person: every worker's sums, and this worker's own."""
    health = _realtime().health()
    response = Response(
        render_template(
            "info.html",
            figures=metrics.figures(current_app.extensions["config"].prometheus_multiproc_dir),
            pid=os.getpid(),
            uptime=int(health.uptime),
            backplane=health.backplane,
            healthy=health.healthy,
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return _secure(response)


def _realtime() -> Realtime:
    return current_app.extensions["realtime"]
