"""The management API: a JSON blueprint to create, inspect, change, rotate and delete clients.

Errors are RFC 9457 problem objects (``application/problem+json``), rendered by handlers on
the blueprint only, so the host app's own error pages are left alone.
"""

from __future__ import annotations

from flask import Blueprint, Response
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from ..bodies import discard_unread_body
from ..errors import InvalidClientData, TemporarilyUnavailable
from ..outages import OUTAGE_ERRORS, log_outage
from ..problems import PROBLEM_TYPE, problem
from .views import register_routes


def _validation_error(error: ValidationError) -> Response:
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return problem(422, "The request body or query string is not valid.", messages)


def _invalid_data(error: InvalidClientData) -> Response:
    field = error.field or "_schema"
    return problem(error.code or 422, str(error.description), {field: [str(error.description)]})


def _http_error(error: HTTPException) -> Response:
    if isinstance(error.response, Response) and error.response.mimetype == PROBLEM_TYPE:
        return error.response  # already a problem object (the rate limiter's 429)
    headers: list[tuple[str, str]] = []
    if error.code in (401, 403, 405, 503):
        original = error.get_response()
        kept = ("WWW-Authenticate", "Allow", "Retry-After", "DPoP-Nonce")
        headers = [(k, v) for k, v in original.headers.items() if k in kept]
    return problem(error.code or 500, str(error.description), headers=headers)


def _unavailable(error: Exception) -> Response:
    log_outage(error)
    retry = {"Retry-After": str(TemporarilyUnavailable.retry_after)}
    return problem(503, str(TemporarilyUnavailable.description), headers=retry)


def create_management_blueprint(url_prefix: str) -> Blueprint:
    """The management blueprint; ``init_app`` registers it unless management is turned off."""
    bp = Blueprint("m2m_management", __name__, url_prefix=url_prefix or None)
    register_routes(bp)
    bp.register_error_handler(ValidationError, _validation_error)
    bp.register_error_handler(InvalidClientData, _invalid_data)
    bp.register_error_handler(HTTPException, _http_error)
    for error in OUTAGE_ERRORS:
        bp.register_error_handler(error, _unavailable)
    bp.after_request(discard_unread_body)  # an early refusal leaves the connection usable
    return bp
