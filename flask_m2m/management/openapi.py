"""The OpenAPI 3.1 document, generated from the marshmallow schemas with apispec."""

from __future__ import annotations

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


_CLIENT_ID = {"name": "client_id", "in": "path", "required": True, "schema": {"type": "string"}}
_SECRET_ID = {"name": "secret_id", "in": "path", "required": True, "schema": {"type": "string"}}
_FORM = "application/x-www-form-urlencoded"
_AUTH = (401, 403, 429, 503)


def _management_paths(spec: APISpec, prefix: str) -> None:
    secured: dict[str, Any] = {"security": [{"bearerAuth": []}]}
    spec.path(
        path=f"{prefix}/clients",
        operations={
            "post": {
                **secured,
                "summary": "Create a client; the only response with its first secret.",
                "requestBody": _body("ClientCreate"),
                "responses": {
                    "201": _json("ClientWithSecret", "Created"),
                    **_problems(400, 415, 422, *_AUTH),
                },
            },
            "get": {
                **secured,
                "summary": "List clients (paginated, filterable).",
                "parameters": [{"in": "query", "schema": schemas.ClientQuerySchema}],
                "responses": {"200": _json("ClientPage", "A page"), **_problems(422, *_AUTH)},
            },
        },
    )
    spec.path(
        path=f"{prefix}/clients/{{client_id}}",
        parameters=[_CLIENT_ID],
        operations={
            "get": {
                **secured,
                "responses": {"200": _json("Client", "The client"), **_problems(404, *_AUTH)},
            },
            "patch": {
                **secured,
                "requestBody": _body("ClientUpdate"),
                "responses": {
                    "200": _json("Client", "Updated"),
                    **_problems(400, 404, 415, 422, *_AUTH),
                },
            },
            "put": {
                **secured,
                "requestBody": _body("ClientUpdate"),
                "responses": {
                    "200": _json("Client", "Updated"),
                    **_problems(400, 404, 415, 422, *_AUTH),
                },
            },
            "delete": {
                **secured,
                "responses": {"204": {"description": "Deleted"}, **_problems(404, *_AUTH)},
            },
        },
    )
    spec.path(
        path=f"{prefix}/clients/{{client_id}}/secret",
        parameters=[_CLIENT_ID],
        operations={
            "post": {
                **secured,
                "summary": "Add a secret; older ones keep working for grace_period_seconds.",
                "requestBody": _body("SecretCreate"),
                "responses": {
                    "200": _json("NewSecret", "The new secret, shown only here"),
                    **_problems(400, 404, 409, 415, 422, *_AUTH),
                },
            }
        },
    )
    spec.path(
        path=f"{prefix}/clients/{{client_id}}/secrets",
        parameters=[_CLIENT_ID],
        operations={
            "get": {
                **secured,
                "responses": {
                    "200": _json("SecretList", "Secret metadata"),
                    **_problems(404, *_AUTH),
                },
            }
        },
    )
    spec.path(
        path=f"{prefix}/clients/{{client_id}}/secrets/{{secret_id}}",
        parameters=[_CLIENT_ID, _SECRET_ID],
        operations={
            "delete": {
                **secured,
                "responses": {"204": {"description": "Retired"}, **_problems(404, 409, *_AUTH)},
            }
        },
    )
    events_get = {
        **secured,
        "parameters": [{"in": "query", "schema": schemas.EventQuerySchema}],
        "responses": {"200": _json("EventPage", "A page of events"), **_problems(422, *_AUTH)},
    }
    spec.path(
        path=f"{prefix}/clients/{{client_id}}/events",
        parameters=[_CLIENT_ID],
        operations={
            "get": {**events_get, "responses": {**events_get["responses"], **_problems(404)}}
        },
    )
    spec.path(path=f"{prefix}/events", operations={"get": events_get})


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
def _build(prefix: str, management: bool) -> dict[str, Any]:
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
        _management_paths(spec, prefix)
    _protocol_paths(spec, prefix)
    return spec.to_dict()


def openapi_document(state: M2MState) -> dict[str, Any]:
    """The document for this app's URL prefix (built once per prefix)."""
    return _build(state.settings.url_prefix, state.settings.management_enabled)
