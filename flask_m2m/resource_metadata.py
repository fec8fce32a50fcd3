"""RFC 9728 protected-resource metadata: where it lives, what it says, and its route.

A resource identifier ``https://api.example.com/billing`` publishes its metadata at
``https://api.example.com/.well-known/oauth-protected-resource/billing`` (§3.1); one without a
path at ``/.well-known/oauth-protected-resource``. The Bearer challenges of its protected
routes point there (``resource_metadata``, §5.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify

#: RFC 9728 §3: the well-known URI suffix.
WELL_KNOWN = "/.well-known/oauth-protected-resource"
#: The endpoint name of the metadata route.
ENDPOINT = "m2m_protected_resource_metadata"
#: Attribute under which ``require_scope`` leaves a view's scopes (``scopes_supported``).
SCOPES_ATTRIBUTE = "_m2m_scopes"


def is_absolute_uri(value: str) -> bool:
    """Whether ``value`` is an absolute ``http(s)`` URI without query or fragment, as a
    resource identifier must be (RFC 8707 §2, RFC 9728 §1.2)."""
    parts = urlsplit(value)
    return (
        parts.scheme in ("https", "http")
        and bool(parts.hostname)
        and not parts.query
        and not parts.fragment
    )


def metadata_path(resource: str) -> str:
    """The path of the metadata of ``resource`` (§3.1: the identifier's path appended, with no
    terminating slash)."""
    return WELL_KNOWN + urlsplit(resource).path.rstrip("/")


def metadata_url(resource: str) -> str:
    """The URL of the metadata of ``resource``, an absolute URI (§3.1)."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}{metadata_path(resource)}"


def scopes_in_use(app: Flask) -> list[str]:
    """The scopes the app's ``require_scope`` routes ask for, sorted."""
    scopes: set[str] = set()
    for view in app.view_functions.values():
        scopes.update(getattr(view, SCOPES_ATTRIBUTE, ()))
    return sorted(scopes)


def document(
    resource: str, issuer: str, scopes: list[str], dpop_algs: Sequence[str] = ()
) -> dict[str, Any]:
    """The metadata (§2): the resource, its authorization server, scopes, that tokens go
    in the ``Authorization`` header only (RFC 6750 §2.1), and the DPoP proof algorithms
    accepted (RFC 9449 DPoP-bound tokens, §2 ``dpop_signing_alg_values_supported``)."""
    body: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": [issuer],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
    }
    if dpop_algs:
        body["dpop_signing_alg_values_supported"] = list(dpop_algs)
    return body


def add_metadata_route(
    app: Flask,
    path: str,
    describe: Callable[[], tuple[str, str]],
    dpop_algs: Sequence[str] = (),
) -> None:
    """Serve the metadata at ``path``; ``describe()`` returns the resource and its issuer."""

    def protected_resource_metadata() -> Response:
        resource, issuer = describe()
        response = jsonify(document(resource, issuer, scopes_in_use(current_app), dpop_algs))
        response.headers["Cache-Control"] = "public, max-age=60"
        return response

    app.add_url_rule(path, ENDPOINT, protected_resource_metadata, methods=["GET"])
