"""Reading and throwing away what is left of a request body after an early refusal.

A refusal decided from the headers alone (413 from ``Content-Length``, 405, 415, 401, 429 …)
leaves the body unread on the connection. Before the server can read the next request of a
keep-alive connection it must skip that body; gunicorn skips at most 64 KiB and otherwise
closes the connection, although its response said ``keep-alive``, so a pooled client's next
request on it fails. ``Connection`` is a hop-by-hop header that belongs to the server (PEP
3333), so the app's own remedy is to read the body and drop it, up to a bound
(``M2M_MAX_DISCARD_BYTES``).

Register :func:`discard_unread_body` as an ``after_request`` hook on a blueprint (flask-m2m
does on its own two) or on an app.
"""

from __future__ import annotations

from typing import Any, Protocol

from flask import Request, Response, current_app, request
from werkzeug.wsgi import LimitedStream

from .config import DEFAULTS

#: Bytes read at a time.
CHUNK_BYTES = 65536


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes | None: ...


def discard_unread_body(response: Response) -> Response:
    """``after_request`` hook: :func:`discard_body` with the app's ``M2M_MAX_DISCARD_BYTES``
    (its default if flask-m2m is not initialised on the app); ``response`` is unchanged."""
    if _may_be_unread(_current_request()):
        state = current_app.extensions.get("m2m")
        default: int = DEFAULTS["M2M_MAX_DISCARD_BYTES"]
        discard_body(default if state is None else state.settings.max_discard_bytes)
    return response


def _current_request() -> Request:
    """The request object itself: each attribute read through the ``request`` proxy costs
    about as much as this whole check."""
    current: Request = request._get_current_object()  # type: ignore[attr-defined]
    return current


def _may_be_unread(current: Request) -> bool:
    """The cheap check first: False when the request has no body, or when ``get_data()`` has
    read it to its end (a body of known length: a chunked one it may have cut short)."""
    environ = current.environ
    if "HTTP_TRANSFER_ENCODING" in environ:
        return True
    if environ.get("CONTENT_LENGTH", "") in ("", "0"):
        return False
    return getattr(current, "_cached_data", None) is None


def discard_body(max_bytes: int) -> None:
    """Read and drop the rest of the current request's body, if that is at most ``max_bytes``.

    A body whose ``Content-Length`` exceeds ``max_bytes`` is left alone: the server then
    closes the connection after the response. A body without one (chunked) is read until
    ``max_bytes`` of it have been read in all. Nothing is read past ``Content-Length``. Never
    raises: a client that goes away in the middle of its body just ends the reading.
    """
    current = _current_request()
    if not _may_be_unread(current):
        return
    length = current.content_length
    if length is None:
        if "chunked" not in current.environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return  # no body
    elif length == 0 or length > max_bytes:
        return
    stream = current.__dict__.get("stream")  # the request's stream, if anything built it
    read = stream.tell() if isinstance(stream, LimitedStream) else 0
    budget = (max_bytes if length is None else length) - read
    if budget <= 0:
        return  # read to its end already (or, chunked, up to the bound)
    try:
        source = _unread_part(current, stream, length, max_bytes)
        while source is not None and budget > 0:
            chunk = source.read(min(CHUNK_BYTES, budget))
            if not chunk:
                break
            budget -= len(chunk)
    except Exception:
        # Whatever a server's input raises here (werkzeug's ClientDisconnected, an OSError,
        # gunicorn's chunked-framing errors) means the client left or the framing broke;
        # the server closes such a connection. The response is built already: keep it.
        current_app.logger.debug("flask-m2m: the unread request body could not be read.")


def _unread_part(
    current: Request, stream: Any, length: int | None, max_bytes: int
) -> _Readable | None:
    """Where the rest of the body can be read without reading past its end, or None."""
    environ = current.environ
    if "wsgi.input_terminated" in environ:
        # The server ends this stream where the body ends; whatever was read through a
        # wrapper of it (request.stream) was taken from it too.
        source: _Readable = environ["wsgi.input"]
        return source
    if length is None:
        return None  # chunked, and the server does not end the stream: unsafe to read
    if stream is None:
        # Built now, at most Content-Length bytes. A max_content_length below the length
        # would make building it raise 413: the bound is raised first (length <= max_bytes).
        current.max_content_length = max(max_bytes, length)
        stream = current.stream
    return stream if isinstance(stream, LimitedStream) else None
