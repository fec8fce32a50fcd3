"""A resource server's requests to its authorization server: RFC 8414 metadata, the JWK set
and RFC 7662 introspection, over the standard library's ``urllib``.

Only configured URLs are fetched (the issuer's metadata URL, ``M2M_JWKS_URI``,
``M2M_INTROSPECTION_ENDPOINT``) or those the issuer's own metadata names, never a URL from a
token. Every request ends by a deadline (``M2M_HTTP_TIMEOUT_SECONDS`` after it started, the
whole answer read, however slowly the server trickles it; only the name lookup before
connecting is left to the system's resolver), reads at most
``M2M_HTTP_MAX_BYTES``, and follows a redirect only to the same scheme, host and port (GET only);
``https`` is required except to a loopback host or with ``M2M_ALLOW_INSECURE_HTTP``.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .resource_config import url_refusal

#: RFC 8414 §3: the well-known URI suffix of authorization-server metadata.
AS_METADATA_SUFFIX = "/.well-known/oauth-authorization-server"
#: Redirects followed at most (same origin only).
MAX_REDIRECTS = 3
READ_CHUNK = 16384


class FetchError(Exception):
    """The authorization server could not be reached or gave no usable answer; the message
    says why (it never holds a credential)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of every request: deadline, size cap, and whether plain http may leave the
    machine."""

    timeout: float
    max_bytes: int
    allow_insecure_http: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status and the JSON of its body."""

    status: int
    body: Any


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: the metadata URL of ``issuer`` (its path, if any, after the suffix)."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}{AS_METADATA_SUFFIX}{parts.path.rstrip('/')}"


class _Deadline:
    """Shuts the request's sockets down when the time is up, so that no read (of a header
    line or of the body) can outlast the deadline, even one fed a byte at a time."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a GET's redirect to the same scheme, host and port only; any other redirect
    is refused (it ends as an ``HTTPError`` with the 3xx status)."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        old, new = urlsplit(req.full_url), urlsplit(newurl)
        if req.get_method() != "GET" or (new.scheme, new.netloc) != (old.scheme, old.netloc):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """An opener whose connections report their sockets to ``deadline``."""

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class SecureConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(Connection, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(SecureConnection, req, context=ssl.create_default_context())

    return urllib.request.build_opener(Handler, SecureHandler, _SameOriginRedirects)


def request_json(
    url: str,
    limits: Limits,
    *,
    form: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """GET ``url`` (or POST the urlencoded ``form``) and parse the JSON answer, whatever its
    status (an error status with a JSON body is an :class:`Answer` too).

    :raises FetchError: refused URL, network error, deadline, redirect elsewhere, too large
        a body, or a body that is not JSON.
    """
    refusal = url_refusal(url, limits.allow_insecure_http)
    if refusal is not None:
        raise FetchError(f"the URL {refusal}")
    request = urllib.request.Request(url, data=form, method="GET" if form is None else "POST")
    request.add_header("Accept", "application/json")
    if form is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    deadline = _Deadline(limits.timeout)
    try:
        try:
            response = _opener(deadline).open(request, timeout=limits.timeout)
        except urllib.error.HTTPError as error:
            response = error  # a status >= 400, or a redirect refused above
        with response:
            status = response.status or 0
            if 300 <= status < 400:
                raise FetchError(f"redirected elsewhere (HTTP {status})")
            body = _read(response, limits.max_bytes)
    except FetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)  # urllib wraps connection errors in URLError
        if deadline.expired or isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            raise FetchError(f"no complete answer within {limits.timeout:g} s") from None
        raise FetchError(f"request failed ({type(exc).__name__})") from None
    finally:
        deadline.cancel()
    if deadline.expired:
        raise FetchError(f"no complete answer within {limits.timeout:g} s")
    try:
        return Answer(status, json.loads(body))
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise FetchError(f"the answer (HTTP {status}) is not JSON") from None


def _read(response: Any, max_bytes: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``max_bytes``."""
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise FetchError(f"the answer is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"the answer is larger than {max_bytes} bytes")
        chunks.append(chunk)


class Discovery:
    """The issuer's ``jwks_uri`` and ``introspection_endpoint``: configured, or read from its
    RFC 8414 metadata (whose ``issuer`` must be the configured one, §3.3) and kept until a
    request to them fails."""

    def __init__(
        self,
        issuer: str,
        limits: Limits,
        jwks_uri: str | None = None,
        introspection_endpoint: str | None = None,
    ):
        self.issuer = issuer
        self.limits = limits
        self._configured = {"jwks_uri": jwks_uri, "introspection_endpoint": introspection_endpoint}
        self._discovered: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def url(self, name: str) -> str:
        """The URL ``name`` (``jwks_uri`` or ``introspection_endpoint``).

        :raises FetchError: if the metadata cannot be read or does not name a usable one.
        """
        configured = self._configured[name]
        if configured is not None:
            return configured
        with self._lock:
            if self._discovered is None:
                self._discovered = self._fetch_metadata()
            value = self._discovered.get(name)
        if not isinstance(value, str) or not value:
            raise FetchError(f"the issuer's metadata has no {name}")
        refusal = url_refusal(value, self.limits.allow_insecure_http)
        if refusal is not None:
            raise FetchError(f"the {name} of the issuer's metadata {refusal}")
        return value

    def forget(self) -> None:
        """Read the metadata again next time (after a request to a URL from it failed)."""
        self._discovered = None

    def _fetch_metadata(self) -> dict[str, Any]:
        answer = request_json(metadata_url(self.issuer), self.limits)
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise FetchError(f"the issuer's metadata answered HTTP {answer.status}")
        if answer.body.get("issuer") != self.issuer:
            raise FetchError("the issuer's metadata names another issuer (RFC 8414 §3.3)")
        return answer.body
