"""RFC 9457 problem responses (``application/problem+json``): the one builder behind every
problem object flask-m2m sends (the management API's errors and its rate limit's 429)."""

from __future__ import annotations

from typing import Any

from flask import Response, json
from werkzeug.http import HTTP_STATUS_CODES

#: Media type of a problem object.
PROBLEM_TYPE = "application/problem+json"


def problem(
    status: int,
    detail: str,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    title: str | None = None,
) -> Response:
    """A problem response: ``type`` ``about:blank``, ``title`` (the status's reason phrase
    unless given), ``status``, ``detail``, and ``errors`` keyed by field when there are any.
    Never cached; ``headers`` are added last (a list of pairs may repeat a name, such as
    the ``Bearer`` and ``DPoP`` challenges)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_TYPE)
    response.headers["Cache-Control"] = "no-store"
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
    named: set[str] = set()
    for name, value in items:
        if name.lower() in named:
            response.headers.add(name, value)
        else:
            response.headers[name] = value
            named.add(name.lower())
    return response
