"""The OpenAPI 3.1 document, generated with apispec from the marshmallow schemas and from the
management API's route table (:data:`flask_m2m.management.views.ROUTES`), the same table the
blueprint is built from."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from . import schemas

if TYPE_CHECKING:
    from ..state import M2MState


class TokenRequestSchema(Schema):
    """RFC 6749 §4.4.2 token request (form-encoded)."""

    grant_type = fields.String(required=True, metadata={"enum": ["client_credentials"]})
    scope = fields.String()
    resource = fields.List(
        fields.String(),
        metadata={
            "description": "RFC 8707 §2 resource indicator, may repeat: the token's aud; each "
            "must be one of the client's audiences, else 400 invalid_target"
        },
    )
    client_id = fields.String(metadata={"description": "client_secret_post only"})
    client_secret = fields.String(metadata={"description": "client_secret_post only"})


class TokenResponseSchema(Schema):
    """RFC 6749 §5.1 token response."""

    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)
    scope = fields.String(required=True)


class TokenParamSchema(Schema):
    """RFC 7009 §2.1 / RFC 7662 §2.1 request (form-encoded)."""

    token = fields.String(required=True)
    token_type_hint = fields.String()
    client_id = fields.String()
    client_secret = fields.String()


class OAuthErrorSchema(Schema):
    """RFC 6749 §5.2 error response."""

    error = fields.String(required=True)
    error_description = fields.String()


class IntrospectionSchema(Schema):
    """RFC 7662 §2.2 introspection response."""

    active = fields.Boolean(required=True)
    scope = fields.String()
    client_id = fields.String()
    token_type = fields.String()
    exp = fields.Integer()
    iat = fields.Integer()
    sub = fields.String()
    aud = fields.Raw()
    iss = fields.String()
    jti = fields.String()


_SCHEMAS: dict[str, type[Schema]] = {
    "Problem": schemas.ProblemSchema,
    "Client": schemas.ClientSchema,
    "ClientWithSecret": schemas.ClientWithSecretSchema,
    "ClientCreate": schemas.ClientCreateSchema,
    "ClientUpdate": schemas.ClientUpdateSchema,
    "ClientPage": schemas.ClientPageSchema,
    "NewSecret": schemas.NewSecretSchema,
    "SecretCreate": schemas.SecretCreateSchema,
    "Secret": schemas.SecretSchema,
    "SecretList": schemas.SecretListSchema,
    "Event": schemas.EventSchema,
    "EventPage": schemas.EventPageSchema,
    "TokenRequest": TokenRequestSchema,
    "TokenResponse": TokenResponseSchema,
    "TokenParams": TokenParamSchema,
    "OAuthError": OAuthErrorSchema,
    "Introspection": IntrospectionSchema,
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": _ref(name)}}}


def _problems(*codes: int) -> dict[str, Any]:
    return {
        str(code): _json("Problem", "Problem details (RFC 9457)", "application/problem+json")
        for code in codes
    }


def _body(name: str, media: str = "application/json") -> dict[str, Any]:
    """A required request body (every management body must be JSON, even an empty one)."""
    return {"required": True, "content": {media: {"schema": _ref(name)}}}


@dataclass(frozen=True, slots=True)
class Route:
    """One route of the management API: the blueprint's URL rule and view, and what the
    OpenAPI document says of it."""

    #: URL rule under the prefix, as Flask writes it: ``/clients/<client_id>``.
    rule: str
    methods: tuple[str, ...]
    view: Callable[..., Any]
    #: Status and body of the success response (None: no body), and its description.
    status: int
    response: type[Schema] | None
    description: str
    #: The JSON request body, if the route takes one (then 400, 415 and 422 may answer).
    body: type[Schema] | None = None
    #: The query string (then 422 may answer).
    query: type[Schema] | None = None
    summary: str | None = None
    #: Problem statuses besides those the rule, body and query imply (401, 403, 429 and 503
    #: always; 404 for a route under a client).
    problems: tuple[int, ...] = ()
    #: Whether the OpenAPI document lists it.
    documented: bool = True


#: A placeholder of a Flask URL rule, ``<name>`` or ``<converter:name>``.
_PLACEHOLDER = re.compile(r"<(?:\w+:)?(\w+)>")
_FORM = "application/x-www-form-urlencoded"
_AUTH = (401, 403, 429, 503)


def _operation(route: Route) -> dict[str, Any]:
    names = {schema: name for name, schema in _SCHEMAS.items()}
    codes = {*_AUTH, *route.problems}
    operation: dict[str, Any] = {"security": [{"bearerAuth": []}]}
    if route.summary:
        operation["summary"] = route.summary
    if route.query is not None:
        operation["parameters"] = [{"in": "query", "schema": route.query}]
        codes.add(422)
    if route.body is not None:
        operation["requestBody"] = _body(names[route.body])
        codes.update((400, 415, 422))
    if "<client_id>" in route.rule:
        codes.add(404)
    ok = {"description": route.description}
    if route.response is not None:
        ok = _json(names[route.response], route.description)
    operation["responses"] = {str(route.status): ok, **_problems(*sorted(codes))}
    return operation


def _management_paths(spec: APISpec, prefix: str, routes: tuple[Route, ...]) -> None:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.documented:
            operations = paths.setdefault(route.rule, {})
            for method in route.methods:
                operations[method.lower()] = _operation(route)
    for rule, operations in paths.items():
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PLACEHOLDER.findall(rule)
        ]
        path = prefix + _PLACEHOLDER.sub(r"{\1}", rule)
        spec.path(path=path, parameters=parameters or None, operations=operations)


def _protocol_paths(spec: APISpec, prefix: str) -> None:
    oauth_errors = {
        str(code): _json("OAuthError", "RFC 6749 §5.2 error") for code in (400, 401, 405, 413, 429)
    }
    form_posts = [
        ("token", "Client credentials grant (RFC 6749 §4.4).", "TokenRequest",
         _json("TokenResponse", "Access token")),
        ("revoke", "Token revocation (RFC 7009).", "TokenParams",
         {"description": "Revoked, or not a token"}),
        ("introspect", "Token introspection (RFC 7662).", "TokenParams",
         _json("Introspection", "Token state")),
    ]
    for name, summary, body, ok in form_posts:
        operation = {
            "security": [{"basicAuth": []}, {}],
            "summary": summary,
            "requestBody": _body(body, _FORM),
            "responses": {"200": ok, **oauth_errors},
        }
        spec.path(path=f"{prefix}/{name}", operations={"post": operation})
    for path, summary in (
        (f"{prefix}/jwks.json", "Public signing keys (RFC 7517)."),
        ("/.well-known/oauth-authorization-server", "Authorization server metadata (RFC 8414)."),
    ):
        operation = {"summary": summary, "responses": {"200": {"description": "JSON document"}}}
        spec.path(path=path, operations={"get": operation})


@cache
def _build(prefix: str, management: bool, routes: tuple[Route, ...]) -> dict[str, Any]:
    from .. import __version__

    spec = APISpec(
        title="flask-m2m",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Machine-to-machine OAuth 2.0 server and client management."},
    )
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("basicAuth", {"type": "http", "scheme": "basic"})
    for name, schema in _SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    if management:
        _management_paths(spec, prefix, routes)
    _protocol_paths(spec, prefix)
    return spec.to_dict()


def openapi_document(state: M2MState, routes: tuple[Route, ...]) -> dict[str, Any]:
    """The document of ``routes`` and the protocol endpoints for this app's URL prefix (built
    once per prefix)."""
    return _build(state.settings.url_prefix, state.settings.management_enabled, routes)
