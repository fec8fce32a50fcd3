"""marshmallow schemas of the management API: request bodies, responses and the problem object.

Shape and type checks live here; policy checks (name required, scope vocabulary, lifetimes,
metadata size) live in :mod:`flask_m2m.lifecycle`, so that the CLI applies them too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from ..policy import (
    CLIENT_AUTH_METHODS,
    MAX_AUDIENCE_LENGTH,
    MAX_AUDIENCES,
    MAX_DAYS,
    MAX_JWKS_URI_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PAGE_SIZE,
    MAX_RATE_LIMIT_LENGTH,
    MAX_SCOPES,
    PAGE_SIZE,
    RATE_LIMIT_MODES,
    SCOPE_TOKEN,
    parse_rate_limit,
)

if TYPE_CHECKING:
    from ..lifecycle import IssuedSecret

_scope = fields.String(validate=validate.Regexp(SCOPE_TOKEN, error="Not a valid scope token."))
#: An RFC 8707 resource identifier; its URI form is checked by the life cycle.
_audience = fields.String(validate=validate.Length(min=1, max=MAX_AUDIENCE_LENGTH))
#: Text without control characters (NUL among them, which PostgreSQL cannot store or compare).
_printable = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="Control characters are not allowed.")


class _RateLimitMixin:
    @validates("rate_limit")
    def _rate_limit(self, value: str | None, **kwargs: Any) -> None:
        if value is not None:
            try:
                parse_rate_limit(value, max_length=MAX_RATE_LIMIT_LENGTH)
            except ValueError as exc:
                raise ValidationError(f"rate_limit must be {exc}.") from None


class ClientCreateSchema(_RateLimitMixin, Schema):
    """Body of ``POST /clients``."""

    name = fields.String(validate=validate.Length(max=MAX_NAME_LENGTH))
    scopes = fields.List(_scope, load_default=list, validate=validate.Length(max=MAX_SCOPES))
    audiences = fields.List(
        _audience, load_default=list, validate=validate.Length(max=MAX_AUDIENCES)
    )
    expires_in_days = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=MAX_DAYS)
    )
    metadata = fields.Dict(keys=fields.String(), allow_none=True)
    rate_limit = fields.String(allow_none=True, validate=validate.Length(max=MAX_RATE_LIMIT_LENGTH))
    rate_limit_mode = fields.String(allow_none=True, validate=validate.OneOf(RATE_LIMIT_MODES))
    access_token_expires_in = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1)
    )
    #: RFC 9449 §5.2: the client must use DPoP; its tokens are all sender-constrained.
    dpop_bound_access_tokens = fields.Boolean(truthy={True}, falsy={False})
    secret_label = fields.String(allow_none=True, validate=validate.Length(max=MAX_LABEL_LENGTH))
    token_endpoint_auth_method = fields.String(
        load_default="client_secret_basic", validate=validate.OneOf(CLIENT_AUTH_METHODS)
    )
    jwks = fields.Dict(
        keys=fields.String(), allow_none=True,
        metadata={"description": "Public JWK Set (RFC 7517 §5) of a private_key_jwt client."},
    )
    jwks_uri = fields.String(
        allow_none=True, validate=validate.Length(max=MAX_JWKS_URI_LENGTH),
        metadata={"description": "https URL of the JWK Set of a private_key_jwt client."},
    )


class ClientKeysSchema(Schema):
    """Body of ``PUT /clients/<id>/keys``: the new keys (``jwks`` or ``jwks_uri``)."""

    token_endpoint_auth_method = fields.String(validate=validate.OneOf(CLIENT_AUTH_METHODS))
    jwks = fields.Dict(keys=fields.String(), allow_none=True)
    jwks_uri = fields.String(allow_none=True, validate=validate.Length(max=MAX_JWKS_URI_LENGTH))


class ClientUpdateSchema(_RateLimitMixin, Schema):
    """Body of ``PATCH /clients/<id>`` (and ``PUT``): only the fields given change."""

    name = fields.String(validate=validate.Length(max=MAX_NAME_LENGTH))
    scopes = fields.List(_scope, validate=validate.Length(max=MAX_SCOPES))
    audiences = fields.List(_audience, validate=validate.Length(max=MAX_AUDIENCES))
    disabled = fields.Boolean()
    metadata = fields.Dict(keys=fields.String(), allow_none=True)
    expires_at = fields.AwareDateTime(allow_none=True, format="iso")
    rate_limit = fields.String(allow_none=True, validate=validate.Length(max=MAX_RATE_LIMIT_LENGTH))
    rate_limit_mode = fields.String(allow_none=True, validate=validate.OneOf(RATE_LIMIT_MODES))
    access_token_expires_in = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1)
    )
    token_endpoint_auth_method = fields.String(validate=validate.OneOf(CLIENT_AUTH_METHODS))
    jwks = fields.Dict(keys=fields.String(), allow_none=True)
    jwks_uri = fields.String(allow_none=True, validate=validate.Length(max=MAX_JWKS_URI_LENGTH))
    dpop_bound_access_tokens = fields.Boolean(truthy={True}, falsy={False})


class SecretCreateSchema(Schema):
    """Body of ``POST /clients/<id>/secret``."""

    grace_period_seconds = fields.Integer(
        strict=True, load_default=0, validate=validate.Range(min=0)
    )
    label = fields.String(allow_none=True, validate=validate.Length(max=MAX_LABEL_LENGTH))


class _ListOrEmpty(fields.List):  # type: ignore[type-arg]  # generic only from marshmallow 4
    """A list shown as ``[]`` when the row holds none (rows from before the column)."""

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> list[Any] | None:
        return super()._serialize(value or [], attr, obj, **kwargs)


class ClientSchema(Schema):
    """A client as the API shows it: never a secret nor a hash."""

    client_id = fields.String(required=True)
    name = fields.String(required=True)
    scopes = fields.List(fields.String(), required=True)
    audiences = _ListOrEmpty(fields.String(), required=True)
    metadata = fields.Dict(attribute="client_metadata", required=True)
    disabled = fields.Boolean(required=True)
    expires_at = fields.AwareDateTime(allow_none=True, required=True)
    rate_limit = fields.String(allow_none=True, required=True)
    rate_limit_mode = fields.String(allow_none=True, required=True)
    access_token_expires_in = fields.Integer(allow_none=True, required=True)
    dpop_bound_access_tokens = fields.Boolean(required=True)
    last_used_at = fields.AwareDateTime(allow_none=True, required=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(required=True)
    token_endpoint_auth_method = fields.String(required=True)
    jwks = fields.Dict(allow_none=True, required=True)
    jwks_uri = fields.String(allow_none=True, required=True)


class NewSecretSchema(Schema):
    """A freshly made secret: the only responses that carry ``client_secret``."""

    client_id = fields.String(required=True)
    client_secret = fields.String(required=True)
    secret_id = fields.String(required=True)
    secret_expires_at = fields.AwareDateTime(allow_none=True, required=True)


class ClientWithSecretSchema(ClientSchema):
    """Response of ``POST /clients``: a ``private_key_jwt`` client has no secret fields."""

    client_secret = fields.String()
    secret_id = fields.String()
    secret_expires_at = fields.AwareDateTime(allow_none=True)


def dump_client_with_secret(client: Any, issued: IssuedSecret | None) -> dict[str, Any]:
    """A client and its new secret, shown once (``POST /clients``, the CLI's ``--json``);
    a key client (``issued`` None) has none."""
    data: dict[str, Any] = ClientSchema().dump(client)
    if issued is not None:
        data.update(NewSecretSchema().dump(issued.as_dict()))
    return data


class SecretSchema(Schema):
    """Metadata of one client secret (never the secret or its hash)."""

    id = fields.String(required=True)
    label = fields.String(allow_none=True, required=True)
    created_at = fields.AwareDateTime(required=True)
    expires_at = fields.AwareDateTime(allow_none=True, required=True)
    last_used_at = fields.AwareDateTime(allow_none=True, required=True)


class SecretListSchema(Schema):
    secrets = fields.List(fields.Nested(SecretSchema), required=True)


class EventSchema(Schema):
    """One audit-trail row."""

    id = fields.Integer(required=True)
    event = fields.String(required=True)
    client_id = fields.String(allow_none=True, required=True)
    actor = fields.String(required=True)
    request_id = fields.String(allow_none=True, required=True)
    changes = fields.Dict(allow_none=True, required=True)
    created_at = fields.AwareDateTime(required=True)


class ClientPageSchema(Schema):
    clients = fields.List(fields.Nested(ClientSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class EventPageSchema(Schema):
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class ClientQuerySchema(Schema):
    """Query string of ``GET /clients``."""

    limit = fields.Integer(
        load_default=PAGE_SIZE, validate=validate.Range(min=1, max=MAX_PAGE_SIZE)
    )
    cursor = fields.String(validate=[_printable, validate.Length(max=500)])
    name_prefix = fields.String(validate=[_printable, validate.Length(max=MAX_NAME_LENGTH)])
    disabled = fields.Boolean()
    expired = fields.Boolean()


class EventQuerySchema(Schema):
    """Query string of ``GET /events`` and ``GET /clients/<id>/events``."""

    limit = fields.Integer(
        load_default=PAGE_SIZE, validate=validate.Range(min=1, max=MAX_PAGE_SIZE)
    )
    cursor = fields.String(validate=[_printable, validate.Length(max=500)])
    event = fields.String(validate=[_printable, validate.Length(max=64)])
    actor = fields.String(validate=[_printable, validate.Length(max=200)])
    client_id = fields.String(validate=[_printable, validate.Length(max=64)])


class ProblemSchema(Schema):
    """RFC 9457 problem details (``application/problem+json``)."""

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(), values=fields.Raw(), metadata={"description": "Messages per field."}
    )
