"""Whether a protocol request came over an acceptable transport (RFC 6749 §1.6, §2.3.1, §3.2).

The decision is flask-m2m's (``M2M_REQUIRE_HTTPS``), made before Authlib sees the request:
HTTPS, or plain HTTP to a loopback host (``localhost``, 127.0.0.0/8, ``::1``), judged from the
request URL (the same rule on every Authlib version; older ones knew fewer loopback forms).
That URL's host
comes from the ``Host`` header, which a client chooses: this guards against a misconfigured
deployment, it is no access control.
"""

from __future__ import annotations

import ipaddress
import threading
import weakref
from functools import lru_cache

from authlib.oauth2.rfc6749 import InvalidRequestError
from flask import Flask, current_app, request

from .config import Settings

#: Apps that have logged the configuration hint already (once per app and process).
_warned: weakref.WeakSet[Flask] = weakref.WeakSet()
_warned_lock = threading.Lock()

HINT = (
    "flask-m2m refused a protocol request over plain HTTP to %r (M2M_REQUIRE_HTTPS). Behind a "
    "proxy that terminates TLS, wrap the app in werkzeug's ProxyFix (app.wsgi_app = "
    "ProxyFix(app.wsgi_app, x_proto=1, ...)) so that it sees https; if the plain-HTTP hop is "
    "trusted, set M2M_ISSUER to the public URL and M2M_REQUIRE_HTTPS = False. This is logged "
    "once per process."
)


def https_required(settings: Settings, app: Flask) -> bool:
    """``M2M_REQUIRE_HTTPS``, or when unset (None): on unless ``app`` is in debug or testing
    mode (read per request, so that ``app.run(debug=True)`` after ``init_app`` counts)."""
    if settings.require_https is not None:
        return settings.require_https
    return not (app.debug or app.testing)


@lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a ``Host`` header value, with or without a port) names this machine:
    ``localhost``, an address in 127.0.0.0/8, or ``::1`` (also as an IPv4-mapped address).

    The answers for the last 256 values are kept: a server sees few ``Host`` values."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.startswith("[") and "]" in name:
        name = name[1 : name.index("]")]
    name = name.rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def insecure_transport(settings: Settings) -> InvalidRequestError | None:
    """The error to answer the current request with when its transport is refused, else None.

    The first refusal of each app logs a warning that says how to configure the deployment.
    """
    current = request._get_current_object()  # type: ignore[attr-defined]
    if current.scheme == "https":
        return None
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if not https_required(settings, app) or is_loopback(current.host):
        return None
    with _warned_lock:
        first = app not in _warned
        _warned.add(app)
    if first:
        app.logger.warning(HINT, request.host[:100])
    return InvalidRequestError("HTTPS is required: this endpoint refuses plain HTTP.")
