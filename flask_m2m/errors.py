"""Exception tree. Errors that become HTTP responses also subclass the matching werkzeug
exception, so a host app can still override them with ``errorhandler``."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.exceptions import (
    Conflict,
    Forbidden,
    HTTPException,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableEntity,
)
from werkzeug.sansio.response import Response as SansioResponse
from werkzeug.wrappers import Response

#: Headers of every JSON error response: errors about credentials must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class M2MError(Exception):
    """Root of every exception raised by flask-m2m."""


class ConfigurationError(M2MError, RuntimeError):
    """A configuration value is missing or invalid, or the extension is set up wrongly."""


class ClientNotFound(M2MError, NotFound):
    """No client has the given id."""


class InvalidClientData(M2MError, UnprocessableEntity):
    """A value given to create or change a client is not acceptable (422).

    :param field: the name of the offending field, if one is to blame.
    """

    def __init__(self, description: str, field: str | None = None):
        super().__init__(description)
        self.field = field


class SecretConflict(M2MError, Conflict):
    """The secrets of a client cannot change that way (too many, or the last one)."""


class JSONHTTPError(M2MError, HTTPException):
    """An HTTP error whose body is an OAuth-style JSON object."""

    error = "server_error"

    def __init__(self, description: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.extra_headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON object of the response."""
        return {"error": self.error, "error_description": self.description}

    def get_response(  # type: ignore[override]
        self, environ: Any = None, scope: Any = None
    ) -> SansioResponse:
        headers = {"Content-Type": "application/json", **NO_STORE, **self.extra_headers}
        return Response(json.dumps(self.body()), status=self.code, headers=headers)


def _bearer_challenge(realm: str, resource_metadata: str | None, **params: str) -> str:
    """An RFC 6750 §3 ``WWW-Authenticate: Bearer`` challenge, with RFC 9728 §5.1
    ``resource_metadata`` when the protected resource publishes its metadata."""
    if resource_metadata:
        params["resource_metadata"] = resource_metadata
    parts = [f'realm="{realm}"'] + [
        f'{key}="{value.replace(chr(34), chr(39))}"' for key, value in params.items()
    ]
    return "Bearer " + ", ".join(parts)


class MissingToken(JSONHTTPError, Unauthorized):
    """RFC 6750 §3.1: the request carried no access token (no error code in the challenge)."""

    error = "invalid_request"
    description = "An access token is required."

    def __init__(self, realm: str, *, resource_metadata: str | None = None):
        challenge = _bearer_challenge(realm, resource_metadata)
        super().__init__(headers={"WWW-Authenticate": challenge})


class InvalidToken(JSONHTTPError, Unauthorized):
    """RFC 6750 §3.1 ``invalid_token``: expired, revoked, malformed or otherwise invalid."""

    error = "invalid_token"

    def __init__(
        self,
        realm: str,
        description: str = "The access token is invalid.",
        *,
        resource_metadata: str | None = None,
    ):
        challenge = _bearer_challenge(
            realm, resource_metadata, error=self.error, error_description=description
        )
        super().__init__(description, headers={"WWW-Authenticate": challenge})


class InsufficientScope(JSONHTTPError, Forbidden):
    """RFC 6750 §3.1 ``insufficient_scope``: the token lacks a scope the route requires."""

    error = "insufficient_scope"

    def __init__(
        self, realm: str, scopes: tuple[str, ...], *, resource_metadata: str | None = None
    ):
        needed = " ".join(scopes)
        description = f"The access token needs the scope(s): {needed}."
        challenge = _bearer_challenge(
            realm, resource_metadata, error=self.error, error_description=description, scope=needed
        )
        super().__init__(description, headers={"WWW-Authenticate": challenge})


class TemporarilyUnavailable(JSONHTTPError, ServiceUnavailable):
    """503 ``temporarily_unavailable`` (RFC 6749 §4.1.2.1's code): the database or the
    rate-limit storage cannot be reached. Nothing of the cause is shown to the caller."""

    error = "temporarily_unavailable"
    description = "The service is temporarily unavailable. Retry later."
    #: Seconds a caller is asked to wait before retrying.
    retry_after = 5

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": str(self.retry_after)})
