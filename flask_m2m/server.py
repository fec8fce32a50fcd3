"""The authorization server: Authlib's Flask server and client-credentials grant, with our hooks.

Client authentication is :mod:`flask_m2m.authentication`'s; token creation is
:class:`~flask_m2m.tokens.TokenService`'s; the routes are :mod:`flask_m2m.endpoints`'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.rfc6749 import InvalidScopeError, OAuth2Error, OAuth2Request, grants
from flask import Response, current_app, json
from flask import request as flask_request

from . import signals
from .assertions import ClientAssertion, private_key_jwt, published_keys
from .authentication import CredentialsCache, client_secret_basic, client_secret_post
from .binding import NonceRequired, ProofError, check_request_proof
from .errors import ConfigurationError, TokenRefused
from .policy import (
    AUTH_METHODS,
    CLIENT_ID_PATTERN,
    MAX_STORED_AUDIENCE_LENGTH,
    RESERVED_CLAIMS,
    SCOPE_TOKEN,
    parse_audience,
)

if TYPE_CHECKING:
    from .state import M2MState


class InvalidDPoPProofError(OAuth2Error):  # type: ignore[misc]
    """RFC 9449 §5: the token request's DPoP proof is missing (when required) or invalid."""

    error = "invalid_dpop_proof"


class UseDPoPNonceError(OAuth2Error):  # type: ignore[misc]
    """RFC 9449 §8: retry the token request with the nonce of the ``DPoP-Nonce`` header."""

    error = "use_dpop_nonce"

    def __init__(self, nonce: str):
        super().__init__("Authorization server requires nonce in DPoP proof.")
        self.nonce = nonce

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("DPoP-Nonce", self.nonce)]


class _FormPayload(FlaskOAuth2Payload):  # type: ignore[misc]
    """RFC 6749 §2.3.1 / §3.2: parameters come from the body only, never from the URL."""

    @property
    def data(self) -> Any:
        return self._request.form


class _FormRequest(FlaskOAuth2Request):  # type: ignore[misc]
    """The request as Authlib sees it, built once its transport has been judged.

    Authlib's constructor refuses an ``http://`` URI to a host other than a loopback one by
    raising ``InsecureTransportError``. flask-m2m judges the transport itself, before this is
    built (:mod:`flask_m2m.transport`, ``M2M_REQUIRE_HTTPS``), so the constructor is given a
    placeholder ``https`` URI, which passes its check, and ``uri`` is the request's real URL
    (built only when asked for). ``FlaskOAuth2Request.__init__`` is skipped: it would pass the
    real URL.
    """

    PLACEHOLDER_URI = "https://transport-checked.invalid/"

    def __init__(self, request: Any):
        self._request = request
        OAuth2Request.__init__(self, request.method, self.PLACEHOLDER_URI)
        # Set after: the constructor's ``headers or {}`` would walk every header to find
        # the mapping non-empty.
        self.headers = request.headers
        self.payload = _FormPayload(request)

    @property
    def uri(self) -> str:
        """The request's real URL, built when something asks for it (the client credentials
        grant never does)."""
        return str(self._request.url)

    @uri.setter
    def uri(self, value: str) -> None:
        pass  # the placeholder Authlib's constructor sets: not the request's URL


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]
    """RFC 8707 §2: a ``resource`` that is malformed or not one this client may ask for."""

    error = "invalid_target"
    status_code = 400


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """RFC 6749 §4.4 with the secret methods and ``private_key_jwt`` (RFC 7523 §2.2), and
    strict scope handling (§3.3)."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_requested_scope(self) -> None:
        """No ``scope``: every allowed scope; a scope not allowed: ``invalid_scope`` (§5.2)."""
        requested = self.request.payload.scope
        allowed = self.request.client.scopes
        if requested is None or not requested.strip():
            self.request.granted_scope = " ".join(allowed)
            return
        tokens = requested.split(" ")
        if not all(SCOPE_TOKEN.fullmatch(t) for t in tokens):
            raise InvalidScopeError("The scope parameter is malformed.")
        refused = [t for t in tokens if t not in allowed]
        if refused:
            raise InvalidScopeError(f"Scope not allowed for this client: {' '.join(refused)}.")
        self.request.granted_scope = " ".join(dict.fromkeys(tokens))

    def validate_requested_resources(self) -> None:
        """RFC 8707 §2: each ``resource`` (it may repeat) must be an absolute URI among the
        client's ``audiences``; they become the token's ``aud``. None: the default audience.

        :raises InvalidTargetError: (400 ``invalid_target``) otherwise.
        """
        requested = self.request.payload.data.getlist("resource")
        self.request.audiences = None
        if not requested:
            return
        try:
            resources = tuple(dict.fromkeys(parse_audience(r) for r in requested))
        except ValueError:
            raise InvalidTargetError("A resource is not an absolute URI.") from None
        allowed = set(self.request.client.audiences or ())
        if not all(r in allowed for r in resources):
            raise InvalidTargetError("A requested resource is not allowed for this client.")
        opaque = self.server.state.settings.token_format == "opaque"
        if opaque and len(" ".join(resources)) > MAX_STORED_AUDIENCE_LENGTH:
            raise InvalidTargetError("Too many resources for one token; ask fewer at a time.")
        self.request.audiences = resources

    def validate_token_request(self) -> None:
        """Authenticate the client and check its scopes and resources, then count its
        token-endpoint limit (so naming a client cannot spend its quota); the limit's headers
        wait for the response.

        :raises RateLimited: (429) when the client is over an enforced limit.
        """
        super().validate_token_request()
        self.validate_requested_resources()
        self.request.dpop_jkt = self._dpop_jkt()
        limits = self.server.state.rate_limits
        self.limit_headers: list[tuple[str, str]] = limits.count_token_request(self.request.client)

    def _dpop_jkt(self) -> str | None:
        """The thumbprint of the request's DPoP proof key (RFC 9449 §5), if it sent one.

        :raises InvalidDPoPProofError: an invalid proof, or none from a client whose tokens
            must be DPoP-bound (``dpop_bound_access_tokens``).
        :raises UseDPoPNonceError: nonces are required and the proof lacks the current one.
        """
        state = self.server.state
        try:
            proof = check_request_proof(state.dpop, state.replay)
        except NonceRequired:
            raise UseDPoPNonceError(state.dpop.nonce()) from None
        except ProofError as exc:
            raise InvalidDPoPProofError(str(exc)) from None
        if proof is None and getattr(self.request.client, "dpop_bound_access_tokens", False):
            raise InvalidDPoPProofError("This client's tokens must be DPoP-bound: send a proof.")
        return proof.jkt if proof is not None else None

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        status, body, headers = super().create_token_response()
        return status, body, [*headers, *self.limit_headers]

    def generate_token(
        self,
        user: Any = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        # §4.4.3: no refresh token; the scope and resources are the ones validated above.
        server: Server = self.server
        audience = self.request.audiences or server.state.audience()
        return server.issue(
            self.request.client, self.request.granted_scope or "", audience, self.request.dpop_jkt
        )


class Server(AuthorizationServer):  # type: ignore[misc]
    """Authlib's Flask authorization server bound to one app's :class:`M2MState`."""

    def __init__(self, state: M2MState, debug: bool = False):
        super().__init__()
        self.state = state
        self.register_grant(ClientCredentialsGrant)
        for method, authenticate in (
            ("client_secret_basic", client_secret_basic),
            ("client_secret_post", client_secret_post),
        ):
            self.register_client_auth_method(method, lambda qc, r, f=authenticate: f(state))
        #: The key sets clients publish at their ``jwks_uri``, as this process fetched them.
        self.published_keys = published_keys(state, debug)
        assertion = ClientAssertion(state, self.published_keys)
        self.register_client_auth_method(
            "private_key_jwt", lambda qc, r: private_key_jwt(state, assertion)
        )
        #: The clients this process has read, with their secrets.
        self.credentials = CredentialsCache(state)

    def query_client(self, client_id: str) -> Any:
        if not isinstance(client_id, str) or not CLIENT_ID_PATTERN.fullmatch(client_id):
            return None
        return self.state.db.session.get(self.state.models.client, client_id)

    def issue(
        self, client: Any, scope: str, audience: str | tuple[str, ...], jkt: str | None
    ) -> dict[str, Any]:
        """The token response for ``client``: the app's ``token_claims`` hook decides on
        extra claims (or refuses), then :meth:`TokenService.issue` issues or reuses a token.

        :raises OAuth2Error: (400) when the hook refuses with :class:`TokenRefused`.
        """
        extra: dict[str, Any] | None = None
        hook = self.state.extension.claims_hook
        if hook is not None:
            try:
                result = hook(client, scope)
            except TokenRefused as exc:
                refusal = OAuth2Error(exc.description, status_code=400)
                refusal.error = exc.error
                raise refusal from None
            extra = dict(result or {})
            reserved = RESERVED_CLAIMS.intersection(extra)
            if reserved:
                raise ConfigurationError(
                    f"token_claims may not set registered claims: {', '.join(sorted(reserved))}."
                )
        return self.state.tokens.issue(
            client, scope, self.state.issuer(), audience, jkt=jkt, extra_claims=extra
        )

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        # An opaque token was stored by TokenService.issue, in a transaction of its own.
        if not signals.token_issued.receivers:  # nobody listens (metrics off): nothing to send
            return
        signals.token_issued.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            client_id=request.client.client_id,
            scope=token.get("scope", ""),
        )

    def create_oauth2_request(self, request: Any) -> _FormRequest:
        return _FormRequest(flask_request)

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Response:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        return Response(body, status=status_code, headers=headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_revoke_token":
            token = kwargs["token"]
            signals.token_revoked.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                client_id=token.client_id,
                jti=token.jti,
            )


