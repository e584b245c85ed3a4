"""The JSON API: history, a bot's publish, the rooms online. Errors: {"error", "detail"}."""

from __future__ import annotations

import hmac

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from gunicorn.http.errors import ParseException  # what gunicorn's reader raises for a malformed body

from .chat import Chat, parse_epoch, parse_message, parse_name, parse_room, parse_since
from .config import Config
from .errors import json_error
from .listing import Listing
from .ratelimit import KeyedRateLimiter, address_key
from .realtime import ErrorCode, ProtocolError

bp = Blueprint("api", __name__, url_prefix="/api")

NAMED = 20  # rooms one call to /api/rooms may name
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
READ_WINDOW = 1.0  # API_RATE_LIMIT counts reads per this many seconds: a burst is a second's


def init_app(app: Flask, config: Config) -> None:
    """Serve the API, its reads limited per client address (API_RATE_LIMIT)."""
    limit = config.api_rate_limit
    app.extensions["api_reads"] = KeyedRateLimiter(limit, READ_WINDOW) if limit else None
    app.register_blueprint(bp)


def _chat() -> Chat:
    return current_app.extensions["chat"]


@bp.before_request
def limit_reads() -> Response | None:
    """A read (GET) past its address's API_RATE_LIMIT in READ_WINDOW: 429, before any work. A
    bot's post is not counted (its token is the gate)."""
    reads: KeyedRateLimiter | None = current_app.extensions["api_reads"]
    if request.method not in ("GET", "HEAD") or reads is None or reads.allow(address_key(request.remote_addr or "")):
        return None
    response = json_error(
        429, "too_many_requests", f"at most {reads.rate} reads of the API per {READ_WINDOW:.0f} s from one address"
    )
    response.headers["Retry-After"] = f"{READ_WINDOW:.0f}"
    return response


@bp.errorhandler(ProtocolError)
def protocol_error(exc: ProtocolError) -> Response:
    return json_error(400, str(exc.code), exc.detail)


@bp.get("/rooms/<room>/messages")
def messages(room: str) -> Response:
    """?since=ID: the first `limit` messages after ID, oldest first (`truncated` when ID is no
    longer kept; `reset` when it cannot be from this store's ids, of another `epoch`: then the
    last `limit`); without it the last `limit`. limit: 1 to 500, default 50. A page holds at
    most READ_BYTES, as a welcome does: `more` when it holds fewer than were found."""
    room = parse_room(room)
    since = parse_since(request.args.get("since"))
    epoch = parse_epoch(request.args.get("epoch"))
    limit = _limit(request.args.get("limit"))
    found = _chat().store.read(room, since, epoch, limit, page=limit)
    return jsonify(
        room=room,
        messages=found.messages,
        more=found.more,
        truncated=found.truncated,
        epoch=found.epoch,
        reset=found.reset,
    )


@bp.post("/rooms/<room>/messages")
def publish(room: str) -> tuple[Response, int] | Response:
    """A bot's message: `Authorization: Bearer <CHAT_API_TOKEN>`, body {"name", "text", "cid"?}.
    201 with the stored message, which live clients get like any other; 200 with the stored
    one when its cid was already posted to the room."""
    chat = _chat()
    token = chat.config.chat_api_token
    if not token:
        return json_error(404, "not_found", "the bot API is off: set CHAT_API_TOKEN to turn it on")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = json_error(401, "unauthorized", "Authorization: Bearer <CHAT_API_TOKEN> is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    room = parse_room(room)
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than Python's parser goes: not JSON to us either
        body = None
    except (OSError, ParseException):  # gunicorn's reader: a body cut short, or badly chunked
        return json_error(400, "bad_body", "the request body could not be read (cut short, or badly chunked)")
    if not isinstance(body, dict):
        return json_error(400, "bad_json", 'the body must be a JSON object like {"name": "bot", "text": "hi"}')
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        return json_error(400, "bad_field", "a post needs a string field 'name'")
    name = parse_name(name, ErrorCode.BAD_FIELD)
    text, cid = parse_message(body, chat.config.max_message_chars)
    message, created = chat.post(room, {"id": f"bot:{name}", "name": name}, text, cid)
    return jsonify(message), 201 if created else 200


@bp.get("/rooms")
def rooms() -> Response:
    """The rooms with people now: each named by `room=` (up to NAMED, counted now), and the
    busiest of this worker's (listing.py), with their member and message counts."""
    named = request.args.getlist("room")
    if len(named) > NAMED:
        return json_error(400, "bad_field", f"name at most {NAMED} rooms")
    listing: Listing = current_app.extensions["listing"]
    return jsonify(rooms=listing.rooms([parse_room(room) for room in dict.fromkeys(named)]))


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ProtocolError(ErrorCode.BAD_PARAM, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)
