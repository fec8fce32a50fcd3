"""Protocol routes: token (RFC 6749 §4.4), revocation (RFC 7009), introspection (RFC 7662),
JWKS (RFC 7517) and authorization-server metadata (RFC 8414); and the server's protector of
its own ``require_scope`` routes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from .binding import ProofPolicy, Replay
from .bodies import discard_unread_body
from .errors import TemporarilyUnavailable
from .outages import DATABASE_ERRORS, OUTAGE_ERRORS, log_outage
from .policy import AUTH_METHODS, RESERVED_CLAIMS
from .resource_metadata import WELL_KNOWN, is_absolute_uri, metadata_url
from .state import M2MState, get_state
from .tokens import AccessToken, TokenRejected
from .transport import insecure_transport

if TYPE_CHECKING:
    from .ratelimit import RateLimits

FORM_TYPE = "application/x-www-form-urlencoded"
METADATA_PATH = "/.well-known/oauth-authorization-server"
#: The scope that lets a client (a resource server) introspect any client's tokens.
INTROSPECT_SCOPE = "m2m:introspect"
#: Parameter names safe to echo in an error description (RFC 6749 §5.2 character set).
SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
#: The token request's parameters that may repeat: RFC 8707 §2 resource indicators.
RESOURCE_PARAMETERS = frozenset({"resource"})


def _state() -> M2MState:
    return get_state()


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009. A client may revoke only its own tokens; any other string is a no-op (§2.2)."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def authenticate_token(self, oauth_request: Any, client: Any) -> AccessToken | None:
        self.check_params(oauth_request, client)
        try:
            token = _state().tokens.decode(oauth_request.form["token"])
        except TokenRejected:
            return None
        return token if token.client_id == client.client_id else None

    def revoke_token(self, token: AccessToken, oauth_request: Any) -> None:
        _state().tokens.revoke(oauth_request.form["token"], token)


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662. A client may introspect its own tokens, and a client holding
    ``m2m:introspect`` (a resource server, §2.1) anyone's; anything else is ``active: false``."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> AccessToken | None:
        try:
            return _state().tokens.decode(token_string)
        except TokenRejected:
            return None

    def check_permission(self, token: AccessToken, client: Any, oauth_request: Any) -> bool:
        return bool(token.client_id == client.client_id or INTROSPECT_SCOPE in client.scopes)

    def create_introspection_payload(self, token: AccessToken | None) -> dict[str, Any]:
        state = _state()
        if token is None:
            return {"active": False}
        try:
            state.tokens.check_claims(token, state.issuer(), None)
            state.tokens.check_state(token)
        except TokenRejected:
            return {"active": False}
        audience = token.audience[0] if len(token.audience) == 1 else list(token.audience)
        # RFC 9449 §6.2: a DPoP-bound token's key thumbprint, as ``cnf.jkt``.
        bound = {"cnf": {"jkt": token.jkt}} if token.jkt else {}
        extra = {k: v for k, v in token.claims.items() if k not in RESERVED_CLAIMS}
        return {
            **extra,  # the app's token_claims hook (RFC 7662 §2.2: other members may appear)
            "active": True,
            "scope": token.scope,
            "client_id": token.client_id,
            "token_type": "DPoP" if token.jkt else "Bearer",
            "exp": token.expires_at,
            "iat": token.issued_at,
            "sub": token.client_id,
            "aud": audience,
            "iss": token.issuer,
            "jti": token.jti,
            **bound,
        }


class ServerProtector:
    """What ``require_scope`` checks on the authorization server's own routes: a token of its
    own audience, checked against its keys and database
    (:meth:`~flask_m2m.tokens.TokenService.authenticate`)."""

    def __init__(self, state: M2MState):
        self.state = state

    @property
    def observe(self) -> Callable[[float, str], None] | None:
        """The metrics' ``require_scope`` histogram, when metrics are on."""
        metrics = self.state.metrics
        return None if metrics is None else metrics.observe_check

    @property
    def dpop(self) -> ProofPolicy | None:
        return self.state.dpop

    @property
    def replay(self) -> Replay:
        return self.state.replay

    def authenticate(self, token_string: str) -> AccessToken:
        state = self.state
        try:
            return state.tokens.authenticate(token_string, state.issuer(), state.audience())
        except DATABASE_ERRORS as exc:
            log_outage(exc)
            raise TemporarilyUnavailable() from None

    def resource_metadata_url(self) -> str:
        settings = self.state.settings
        own = settings.audience or settings.issuer
        if own and is_absolute_uri(own):
            return metadata_url(own)
        # The audience follows the request (or is no URI): the metadata is where this app
        # serves it.
        return request.host_url.rstrip("/") + request.script_root + WELL_KNOWN


def _oauth_error(error: OAuth2Error) -> Response:
    response: Response = _state().server.handle_error_response(None, error)
    return response


def _too_large() -> Response:
    return _oauth_error(InvalidRequestError("The request body is too large.", status_code=413))


def _refuse_bad_form(repeatable: frozenset[str] = frozenset()) -> Response | None:
    """The checks every protocol POST passes before Authlib sees it (RFC 6749 §1.6, §3.2,
    §4.4.2): the transport first, then the method, the size and the form itself.

    :param repeatable: the parameters an extension lets repeat (RFC 8707 §2 ``resource``).
    """
    settings = _state().settings
    insecure = insecure_transport(settings)
    if insecure is not None:
        return _oauth_error(insecure)
    limit = settings.max_request_bytes
    current = request._get_current_object()  # type: ignore[attr-defined]
    if current.method != "POST":
        response = _oauth_error(InvalidRequestError("Use POST.", status_code=405))
        response.headers["Allow"] = "POST"
        return response
    length = current.content_length
    if length is not None and length > limit:
        return _too_large()
    if current.mimetype != FORM_TYPE:
        return _oauth_error(InvalidRequestError(f"The body must be {FORM_TYPE}."))
    # A streamed body is cut at the reading limit rather than refused: read one byte more
    # than allowed, and refuse what reached it.
    current.max_content_length = limit + 1
    try:
        body = current.get_data(cache=True)  # cached for the form parser below
        if len(body) > limit:
            return _too_large()
        body.decode("utf-8")
        form = current.form
    except RequestEntityTooLarge:
        return _too_large()
    except UnicodeDecodeError:
        return _oauth_error(InvalidRequestError("The body is not valid UTF-8."))
    repeated = [
        name for name, values in form.lists() if len(values) > 1 and name not in repeatable
    ]
    if repeated:
        # RFC 6749 §3.2: parameters MUST NOT be included more than once.
        name = repeated[0] if SAFE_NAME.fullmatch(repeated[0]) else "(unprintable)"
        return _oauth_error(InvalidRequestError(f"Repeated parameter: {name}."))
    if any("\x00" in value or "\ufffd" in value for value in form.values()):
        return _oauth_error(InvalidRequestError("A parameter holds NUL or invalid UTF-8."))
    return None


def token() -> Response:
    """``POST {prefix}/token`` — the client credentials grant (RFC 6749 §4.4); ``resource``
    may repeat (RFC 8707 §2)."""
    refused = _refuse_bad_form(RESOURCE_PARAMETERS)
    if refused is not None:
        return refused
    if not request.form.get("grant_type"):
        return _oauth_error(InvalidRequestError("Missing grant_type."))
    try:
        response: Response = _state().server.create_token_response()
    except OAuth2Error as error:  # Authlib catches those of the grant only, not its setup's
        return _oauth_error(error)
    return response


def _endpoint_response(name: str) -> Response:
    """Authlib's response of endpoint ``name``; any ``OAuth2Error`` as a §5.2 error."""
    refused = _refuse_bad_form()
    if refused is not None:
        return refused
    try:
        response: Response = _state().server.create_endpoint_response(name)
    except OAuth2Error as error:  # e.g. one raised while Authlib builds its request
        return _oauth_error(error)
    return response


def revoke() -> Response:
    """``POST {prefix}/revoke`` (RFC 7009)."""
    return _endpoint_response(Revocation.ENDPOINT_NAME)


def introspect() -> Response:
    """``POST {prefix}/introspect`` (RFC 7662)."""
    return _endpoint_response(Introspection.ENDPOINT_NAME)


def jwks() -> Response:
    """``GET {prefix}/jwks.json`` — the public signing keys (RFC 7517 §5)."""
    response = jsonify(_state().keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


def metadata() -> Response:
    """``GET /.well-known/oauth-authorization-server`` (RFC 8414 §3)."""
    state = _state()
    base = state.issuer() + state.settings.url_prefix
    algs = list(state.settings.client_assertion_algs)
    return jsonify(
        {
            "issuer": state.issuer(),
            "token_endpoint": base + "/token",
            "jwks_uri": base + "/jwks.json",
            "revocation_endpoint": base + "/revoke",
            "introspection_endpoint": base + "/introspect",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
            # RFC 8414 §2: the JWS algorithms of private_key_jwt assertions (RFC 7523).
            "token_endpoint_auth_signing_alg_values_supported": algs,
            "revocation_endpoint_auth_signing_alg_values_supported": algs,
            "introspection_endpoint_auth_signing_alg_values_supported": algs,
            # RFC 9449 §5.1
            "dpop_signing_alg_values_supported": list(state.dpop.algs),
        }
    )


def _unavailable(error: Exception) -> Response:
    """503 ``temporarily_unavailable`` while the database or limiter storage is unreachable."""
    log_outage(error)
    return TemporarilyUnavailable().get_response()  # type: ignore[return-value]


def create_blueprint(url_prefix: str, limits: RateLimits) -> Blueprint:
    """The protocol blueprint, rate-limited; ``init_app`` registers it on each app."""
    bp = Blueprint("m2m", __name__)
    every_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    token_view = limits.protect_client_auth(token)
    if limits.state.metrics is not None:
        token_view = limits.state.metrics.time_token_endpoint(token_view)
    bp.add_url_rule(f"{url_prefix}/token", view_func=token_view, methods=every_method)
    for name, view in (("revoke", revoke), ("introspect", introspect)):
        bp.add_url_rule(
            f"{url_prefix}/{name}", view_func=limits.protect_client_auth(view), methods=every_method
        )
    bp.add_url_rule(f"{url_prefix}/jwks.json", view_func=jwks, methods=["GET"])
    bp.add_url_rule(METADATA_PATH, view_func=metadata, methods=["GET"])
    for error in OUTAGE_ERRORS:
        bp.register_error_handler(error, _unavailable)
    bp.after_request(discard_unread_body)  # an early refusal leaves the connection usable
    return bp

