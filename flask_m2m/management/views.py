"""Routes of the management API; each one is a thin layer over :mod:`flask_m2m.lifecycle`.

Each route works in a session of its own (:func:`flask_m2m.writes.own_session`), which it
commits, or rolls back on error: the app's ``db.session`` is never used, so work the app has
pending there is neither committed nor rolled back by a management call. The caller's
principal is the ``actor`` of the audit rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, Forbidden, UnsupportedMediaType

from .. import audit, lifecycle, writes
from ..decorators import authenticate_request
from ..errors import ClientNotFound
from ..policy import CLIENT_ID_PATTERN
from ..state import get_state
from .openapi import Route, openapi_document
from .schemas import (
    ClientCreateSchema,
    ClientPageSchema,
    ClientQuerySchema,
    ClientSchema,
    ClientUpdateSchema,
    ClientWithSecretSchema,
    EventPageSchema,
    EventQuerySchema,
    NewSecretSchema,
    SecretCreateSchema,
    SecretListSchema,
    dump_client_with_secret,
)

P = ParamSpec("P")
R = TypeVar("R")

#: Largest JSON body the management API reads.
MAX_BODY_BYTES = 1024 * 1024

#: Scope a Bearer token needs to use the management API (unless an authorizer is set).
ADMIN_SCOPE = "m2m:admin"

#: Methods whose body must be JSON. An HTML form on another site can send only form-encoded,
#: multipart or text/plain bodies without a CORS preflight, so none of these requests can
#: come from one, even when the app's authorizer trusts a cookie the browser adds.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

#: Name on ``flask.g`` of the request's authorization outcome: a principal or an exception.
_OUTCOME = "_m2m_management_caller"


def authorize() -> str:
    """The acting principal, from the app's authorizer or an ``m2m:admin`` Bearer token.

    Decided once per request: the management rate limit asks first, before the view (see
    :func:`caller_principal`), and the view gets the same principal or the same error.

    :raises MissingToken, InvalidToken, InsufficientScope: (401/403) for token callers.
    :raises Forbidden: when the app's authorizer refuses.
    """
    outcome = g.get(_OUTCOME)
    if outcome is None:
        try:
            outcome = _authorize()
        except Exception as exc:  # kept, to surface in the view as if raised there
            outcome = exc
        setattr(g, _OUTCOME, outcome)
    if isinstance(outcome, Exception):
        raise outcome
    return str(outcome)


def caller_principal() -> str | None:
    """The principal of the caller, or None when it may not manage clients (the refusal is
    kept for the view)."""
    try:
        return authorize()
    except Exception:
        return None


def _authorize() -> str:
    state = get_state()
    authorizer = state.management_authorizer()
    if authorizer is not None:
        principal = authorizer()
        if principal is None or principal is False:
            raise Forbidden("You may not manage clients.")
        return str(principal)
    token = authenticate_request((ADMIN_SCOPE,))
    return f"client:{token.client_id}"


def managed(view: Callable[P, R]) -> Callable[P, R]:
    """Authorize the caller (the view names it as the actor with :func:`authorize`), and
    refuse a POST, PUT or PATCH whose body is not ``application/json`` (415): the one place
    of that rule, after authorization, so a caller who may not manage clients gets its
    401 or 403 instead."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        authorize()
        if request.method in BODY_METHODS and not request.is_json:
            raise UnsupportedMediaType("Send the body as application/json.")
        return view(*args, **kwargs)

    return wrapper


def _json_body(empty: dict[str, Any] | None = None) -> Any:
    """The request's JSON body (its media type is checked by :func:`managed`): 413 when too
    large, 400 when unreadable.

    :param empty: what an empty body stands for; without it, an empty body is a 400.
    """
    request.max_content_length = MAX_BODY_BYTES
    data = request.get_data(cache=True)
    if not data and empty is not None:
        return empty
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # also NaN/Infinity, which JSON does not have
        raise BadRequest("The body is not valid JSON.") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _dump(schema: Any, obj: Any, status: int = 200) -> tuple[Response, int]:
    return jsonify(schema.dump(obj)), status


def _reading() -> Session:
    """A session of the API's own for a read (closed by the ``with`` block using it)."""
    session: Session = get_state().db.session.session_factory()
    return session


@managed
def create_client() -> tuple[Response, int]:
    data = ClientCreateSchema().load(_json_body())
    state = get_state()
    with writes.own_session(state.db) as session:
        client, issued = lifecycle.create_client(
            state, actor=authorize(), session=session, **data
        )
        body = dump_client_with_secret(client, issued)
    return jsonify(body), 201


@managed
def list_clients() -> tuple[Response, int]:
    query = ClientQuerySchema().load(request.args)
    with _reading() as session:
        page = lifecycle.list_clients(get_state(), session=session, **query)
        return _dump(ClientPageSchema(), {"clients": page.items, "next_cursor": page.next_cursor})


@managed
def get_client(client_id: str) -> tuple[Response, int]:
    with _reading() as session:
        return _dump(ClientSchema(), lifecycle.get_client(get_state(), client_id, session=session))


@managed
def update_client(client_id: str) -> tuple[Response, int]:
    changes = ClientUpdateSchema().load(_json_body())
    state = get_state()
    with writes.own_session(state.db) as session:
        client = lifecycle.update_client(
            state, client_id, changes, actor=authorize(), session=session
        )
        return _dump(ClientSchema(), client)


@managed
def delete_client(client_id: str) -> Response:
    state = get_state()
    with writes.own_session(state.db) as session:
        lifecycle.delete_client(state, client_id, actor=authorize(), session=session)
    return Response(status=204)


@managed
def add_secret(client_id: str) -> tuple[Response, int]:
    data = SecretCreateSchema().load(_json_body(empty={}))
    state = get_state()
    with writes.own_session(state.db) as session:
        _, issued = lifecycle.rotate_secret(
            state, client_id, actor=authorize(), session=session, **data
        )
    return jsonify(NewSecretSchema().dump(issued.as_dict())), 200


@managed
def list_secrets(client_id: str) -> tuple[Response, int]:
    with _reading() as session:
        secrets = lifecycle.list_secrets(get_state(), client_id, session=session)
        return _dump(SecretListSchema(), {"secrets": secrets})


@managed
def delete_secret(client_id: str, secret_id: str) -> Response:
    state = get_state()
    with writes.own_session(state.db) as session:
        lifecycle.delete_secret(state, client_id, secret_id, actor=authorize(), session=session)
    return Response(status=204)


@managed
def client_events(client_id: str) -> tuple[Response, int]:
    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise ClientNotFound(f"No client {client_id!r}.")
    query = EventQuerySchema().load(request.args)
    query["client_id"] = client_id
    with _reading() as session:
        page = audit.list_events(get_state(), session=session, **query)
        return _dump(EventPageSchema(), {"events": page.items, "next_cursor": page.next_cursor})


@managed
def events() -> tuple[Response, int]:
    query = EventQuerySchema().load(request.args)
    with _reading() as session:
        page = audit.list_events(get_state(), session=session, **query)
        return _dump(EventPageSchema(), {"events": page.items, "next_cursor": page.next_cursor})


def openapi() -> Response:
    """The OpenAPI 3.1 document of the management API and the protocol endpoints."""
    return jsonify(openapi_document(get_state(), ROUTES))


#: Every route of the management API: the blueprint and the OpenAPI document are built from it.
ROUTES: tuple[Route, ...] = (
    Route(
        "/clients", ("POST",), create_client, 201, ClientWithSecretSchema, "Created",
        body=ClientCreateSchema,
        summary="Create a client; the only response with its first secret.",
    ),
    Route(
        "/clients", ("GET",), list_clients, 200, ClientPageSchema, "A page",
        query=ClientQuerySchema, summary="List clients (paginated, filterable).",
    ),
    Route("/clients/<client_id>", ("GET",), get_client, 200, ClientSchema, "The client"),
    Route(
        "/clients/<client_id>", ("PATCH", "PUT"), update_client, 200, ClientSchema, "Updated",
        body=ClientUpdateSchema,
    ),
    Route("/clients/<client_id>", ("DELETE",), delete_client, 204, None, "Deleted"),
    Route(
        "/clients/<client_id>/secret", ("POST",), add_secret, 200, NewSecretSchema,
        "The new secret, shown only here", body=SecretCreateSchema, problems=(409,),
        summary="Add a secret; older ones keep working for grace_period_seconds.",
    ),
    Route(
        "/clients/<client_id>/secrets", ("GET",), list_secrets, 200, SecretListSchema,
        "Secret metadata",
    ),
    Route(
        "/clients/<client_id>/secrets/<secret_id>", ("DELETE",), delete_secret, 204, None,
        "Retired", problems=(409,),
    ),
    Route(
        "/clients/<client_id>/events", ("GET",), client_events, 200, EventPageSchema,
        "A page of events", query=EventQuerySchema,
    ),
    Route(
        "/events", ("GET",), events, 200, EventPageSchema, "A page of events",
        query=EventQuerySchema,
    ),
    Route("/openapi.json", ("GET",), openapi, 200, None, "This document", documented=False),
)


def register_routes(bp: Blueprint) -> None:
    """Add the management routes (:data:`ROUTES`) to ``bp``."""
    for route in ROUTES:
        bp.add_url_rule(route.rule, view_func=route.view, methods=list(route.methods))
