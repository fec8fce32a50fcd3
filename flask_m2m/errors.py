"""Exception tree. Errors that become HTTP responses also subclass the matching werkzeug
exception, so a host app can still override them with ``errorhandler``."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.datastructures import Headers
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
    """An HTTP error whose body is an OAuth-style JSON object.

    :param headers: extra response headers; a list of pairs may repeat a name (several
        ``WWW-Authenticate`` challenges).
    """

    error = "server_error"

    def __init__(
        self,
        description: str | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
    ):
        super().__init__(description)
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
        self.extra_headers: list[tuple[str, str]] = items

    def body(self) -> dict[str, Any]:
        """The JSON object of the response."""
        return {"error": self.error, "error_description": self.description}

    def get_response(  # type: ignore[override]
        self, environ: Any = None, scope: Any = None
    ) -> SansioResponse:
        headers = Headers({"Content-Type": "application/json", **NO_STORE})
        for name, value in self.extra_headers:
            headers.add(name, value)
        return Response(json.dumps(self.body()), status=self.code, headers=headers)


def _challenge(scheme: str, realm: str | None, **params: str) -> str:
    """An RFC 6750 §3 (``Bearer``) or RFC 9449 §7.1 (``DPoP``) ``WWW-Authenticate`` challenge."""
    parts = [f'realm="{realm}"'] if realm else []
    parts += [f'{key}="{value.replace(chr(34), chr(39))}"' for key, value in params.items()]
    return f"{scheme} " + ", ".join(parts)


def _challenges(
    realm: str,
    dpop_algs: str | None,
    scheme: str = "Bearer",
    resource_metadata: str | None = None,
    **params: str,
) -> list[tuple[str, str]]:
    """The challenges of a protected route: the error in the ``scheme`` one (the scheme the
    request used), and a bare challenge of the other scheme when DPoP is accepted (RFC 9449
    §7.1); each with RFC 9728 §5.1 ``resource_metadata`` when the resource publishes it."""
    meta = {"resource_metadata": resource_metadata} if resource_metadata else {}
    bearer = _challenge("Bearer", realm, **(params if scheme == "Bearer" else {}), **meta)
    if dpop_algs is None:
        return [("WWW-Authenticate", bearer)]
    dpop = _challenge(
        "DPoP", realm, algs=dpop_algs, **(params if scheme == "DPoP" else {}), **meta
    )
    first, second = (bearer, dpop) if scheme == "Bearer" else (dpop, bearer)
    return [("WWW-Authenticate", first), ("WWW-Authenticate", second)]


class MissingToken(JSONHTTPError, Unauthorized):
    """RFC 6750 §3.1: the request carried no access token (no error code in the challenge).

    :param dpop_algs: the DPoP proof algorithms accepted (space-separated), to add a ``DPoP``
        challenge (RFC 9449 §7.1).
    """

    error = "invalid_request"
    description = "An access token is required."

    def __init__(
        self,
        realm: str,
        dpop_algs: str | None = None,
        *,
        resource_metadata: str | None = None,
    ):
        super().__init__(headers=_challenges(realm, dpop_algs, "Bearer", resource_metadata))


class InvalidToken(JSONHTTPError, Unauthorized):
    """RFC 6750 §3.1 ``invalid_token``: expired, revoked, malformed or otherwise invalid.

    :param scheme: ``Bearer`` or ``DPoP``: the scheme the token came with.
    """

    error = "invalid_token"

    def __init__(
        self,
        realm: str,
        description: str = "The access token is invalid.",
        *,
        scheme: str = "Bearer",
        dpop_algs: str | None = None,
        resource_metadata: str | None = None,
    ):
        challenges = _challenges(
            realm, dpop_algs, scheme, resource_metadata,
            error=self.error, error_description=description,
        )
        super().__init__(description, headers=challenges)


class InvalidDPoPProof(InvalidToken):
    """RFC 9449 §7.1 ``invalid_dpop_proof`` (401): the DPoP proof is missing or invalid."""

    error = "invalid_dpop_proof"

    def __init__(
        self, realm: str, description: str, dpop_algs: str, resource_metadata: str | None = None
    ):
        super().__init__(
            realm, description, scheme="DPoP", dpop_algs=dpop_algs,
            resource_metadata=resource_metadata,
        )


class UseDPoPNonce(InvalidToken):
    """RFC 9449 §9 ``use_dpop_nonce`` (401): retry with the nonce of the ``DPoP-Nonce`` header."""

    error = "use_dpop_nonce"

    def __init__(
        self, realm: str, nonce: str, dpop_algs: str, resource_metadata: str | None = None
    ):
        description = "Resource server requires nonce in DPoP proof."
        super().__init__(
            realm, description, scheme="DPoP", dpop_algs=dpop_algs,
            resource_metadata=resource_metadata,
        )
        self.extra_headers.append(("DPoP-Nonce", nonce))


class InsufficientScope(JSONHTTPError, Forbidden):
    """RFC 6750 §3.1 ``insufficient_scope``: the token lacks a scope the route requires."""

    error = "insufficient_scope"

    def __init__(
        self,
        realm: str,
        scopes: tuple[str, ...],
        *,
        scheme: str = "Bearer",
        dpop_algs: str | None = None,
        resource_metadata: str | None = None,
    ):
        needed = " ".join(scopes)
        description = f"The access token needs the scope(s): {needed}."
        challenges = _challenges(
            realm, dpop_algs, scheme, resource_metadata,
            error=self.error, error_description=description, scope=needed,
        )
        super().__init__(description, headers=challenges)


class TokenRefused(M2MError):
    """Raised by a ``token_claims`` hook to refuse a token: the token endpoint answers 400
    with ``error`` (an RFC 6749 §5.2 code) and ``description``.

    .. versionadded:: 0.2
    """

    ERRORS = ("unauthorized_client", "invalid_request", "invalid_scope")

    def __init__(self, description: str, error: str = "unauthorized_client"):
        if error not in self.ERRORS:
            raise ValueError(f"error must be one of {self.ERRORS}.")
        super().__init__(description)
        self.description = description
        self.error = error


class TemporarilyUnavailable(JSONHTTPError, ServiceUnavailable):
    """503 ``temporarily_unavailable`` (RFC 6749 §4.1.2.1's code): the database or the
    rate-limit storage cannot be reached. Nothing of the cause is shown to the caller."""

    error = "temporarily_unavailable"
    description = "The service is temporarily unavailable. Retry later."
    #: Seconds a caller is asked to wait before retrying.
    retry_after = 5

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": str(self.retry_after)})
