"""Client side: fetch, cache and renew a client-credentials access token for httpx or requests.

Install with ``pip install 'flask-m2m[client]'``. Typical use::

    creds = ClientCredentials(issuer="https://auth.example.com", client_id=..., client_secret=...)
    auth = ClientCredentialsAuth(creds)
    httpx.get("https://api.example.com/items", auth=auth)      # httpx.Client / AsyncClient too
    requests.get("https://api.example.com/items", auth=auth)

With ``dpop=True`` (or a private JWK), tokens are DPoP-bound (RFC 9449): each token request
and each API call through :class:`ClientCredentialsAuth` carries a fresh proof of the key.

The token request itself is built with Authlib's protocol helpers; see ``docs/client.md``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import os
import ssl
import threading
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, urlencode

from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from authlib.oauth2.rfc8414.well_known import get_well_known_url

from .dpop import ProofSigner
from .errors import M2MError

if TYPE_CHECKING:
    import httpx
    import requests
    from httpx import Auth as _HTTPXAuth
else:
    try:
        from httpx import Auth as _HTTPXAuth
    except ImportError:  # requests only: the auth object still works as a requests auth
        _HTTPXAuth = object

__all__ = ["ClientCredentials", "ClientCredentialsAuth", "DiscoveryError", "TokenError"]

log = logging.getLogger(__name__)

_INSTALL = "pip install 'flask-m2m[client]'"
_FORM = "application/x-www-form-urlencoded"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
#: RFC 7523 §2.2: the ``client_assertion_type`` of a JWT client assertion.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Most tokens one :class:`ClientCredentials` keeps (one per scopes and audience).
MAX_CACHED_TOKENS = 64

#: A cached token's key: the scopes asked (None: the server's default) and the resources.
_Key = tuple[str | None, tuple[str, ...]]
#: One resource (RFC 8707 §2), several, or None.
Resource = str | Sequence[str] | None


class TokenError(M2MError):
    """The token endpoint refused or failed a request; ``error`` is the RFC 6749 §5.2 code.

    :param status_code: the HTTP status, or None when the server could not be reached.
    :param retry_after: seconds from a ``Retry-After`` header (429), if any.
    """

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ):
        self.error = error
        self.description = description
        self.status_code = status_code
        self.retry_after = retry_after
        status = f"HTTP {status_code}: " if status_code is not None else ""
        super().__init__(f"{status}{error}" + (f" ({description})" if description else ""))


class DiscoveryError(TokenError):
    """RFC 8414 metadata could not be fetched or does not describe the configured issuer."""


@dataclass(frozen=True)
class _Reply:
    status_code: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except ValueError:
            return None


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float | None  # time.monotonic() after which the token is renewed; None: never


def _encode_client_secret_basic(
    client: Any, method: str, uri: str, headers: dict[str, str], body: str
) -> tuple[str, dict[str, str], str]:
    """RFC 6749 §2.3.1: id and secret are form-encoded *before* Base64 (Authlib's are not)."""
    raw = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
    headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
    return uri, headers, body


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        return None
    return httpx


def _requests() -> Any:
    try:
        import requests
    except ImportError:
        return None
    return requests


class ClientCredentials:
    """A cached client-credentials access token, renewed shortly before it expires.

    Share one instance between threads (one token request at a time) and coroutines (an
    :class:`asyncio.Lock` per event loop). Neither the secret nor a token is ever logged.

    :param token_endpoint: the token endpoint URL; or give ``issuer`` to discover it.
    :param issuer: the issuer URL; ``{issuer}``'s RFC 8414 metadata names the token endpoint.
    :param scope: scopes to ask for (space-separated); None: the server's default.
    :param resource: the RFC 8707 resource indicator(s) asked by default: the audience(s) of
        the token (its ``aud``). :meth:`token` takes another per call; one token is cached per
        scopes and resources.
    :param audience: sent as the ``audience`` parameter, for servers that use it.
    :param leeway: renew this many seconds before expiry (at most half the token's lifetime),
        or a share of the lifetime such as ``"10%"``.
    :param auth_method: ``client_secret_basic`` (default) or ``client_secret_post``; with
        ``private_key``, ``private_key_jwt``.
    :param private_key: instead of ``client_secret``, the client's private key (RFC 7523
        ``private_key_jwt``): a PEM file's path, PEM bytes or text, or a private JWK (dict);
        each token request carries a fresh assertion signed with it.
    :param assertion_lifetime: seconds each assertion is valid (60 by default).
    :param timeout: seconds to wait for the token endpoint.
    :param verify: TLS verification: a bool, or the path of a CA bundle (given to httpx as an
        :class:`ssl.SSLContext` that trusts that bundle, to requests as the path).
    :param dpop: True for DPoP-bound tokens (RFC 9449) with a key made for this instance, or
        the private key (a JWK dict or joserfc key) to prove; False: Bearer tokens.
    """

    def __init__(
        self,
        token_endpoint: str | None = None,
        *,
        issuer: str | None = None,
        client_id: str,
        client_secret: str | None = None,
        private_key: str | bytes | os.PathLike[str] | Mapping[str, Any] | None = None,
        assertion_lifetime: int = 60,
        scope: str | None = None,
        resource: Resource = None,
        audience: str | None = None,
        leeway: float | str = 30,
        auth_method: str = "client_secret_basic",
        timeout: float = 10.0,
        verify: bool | str = True,
        dpop: bool | dict[str, Any] | Any = False,
    ):
        if token_endpoint is None and issuer is None:
            raise ValueError("Give token_endpoint or issuer (to discover the token endpoint).")
        if not client_id or (not client_secret) == (private_key is None):
            raise ValueError("client_id and either client_secret or private_key are required.")
        if private_key is not None:
            auth_method = "private_key_jwt"
        elif auth_method not in AUTH_METHODS[:2]:
            raise ValueError(f"auth_method must be one of {AUTH_METHODS[:2]}.")
        self.client_id = client_id
        self.issuer = issuer.rstrip("/") if issuer else None
        self.scope = scope
        self.resource = _resources(resource)
        self.audience = audience
        self.auth_method = auth_method
        self.timeout = timeout
        self.verify = verify
        self._ssl_context: ssl.SSLContext | None = None  # httpx's context for a CA bundle path
        self._leeway, self._leeway_share = _parse_leeway(leeway)
        self._token_endpoint = token_endpoint
        self._signer = (
            _AssertionSigner(client_id, private_key, assertion_lifetime)
            if private_key is not None
            else None
        )
        encoder = _encode_client_secret_basic if auth_method == "client_secret_basic" else None
        self._client_auth = (
            ClientAuth(client_id, client_secret, encoder or auth_method) if client_secret else None
        )
        #: The DPoP key and nonces (None: Bearer tokens).
        self.dpop: ProofSigner | None = None
        if dpop is not False and dpop is not None:
            self.dpop = ProofSigner(None if dpop is True else dpop)
        self._tokens: dict[_Key, _Token] = {}
        self._fetch_lock = threading.Lock()  # held while a (sync) token request is in flight
        self._guard = threading.Lock()  # held briefly around shared state and counters
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_locks = weakref.WeakKeyDictionary()
        #: Token requests sent (successful or not).
        self.fetch_count = 0
        #: Token requests that failed (the server refused, or could not be reached).
        self.failure_count = 0

    def __repr__(self) -> str:
        where = self._token_endpoint or self.issuer
        return f"<ClientCredentials client_id={self.client_id!r} at {where!r}>"

    @property
    def token_endpoint(self) -> str | None:
        """The token endpoint: given, or discovered (None until the first token request)."""
        return self._token_endpoint

    # -- sync --------------------------------------------------------------------------------

    def token(self, *, scope: str | None = None, resource: Resource = None) -> str:
        """A valid access token: the cached one, or a new one fetched now.

        :param scope: the scopes to ask for, instead of the ``scope`` given at construction.
        :param resource: the resource(s) (RFC 8707) the token is for, instead of the
            ``resource`` given at construction; a token is cached per scopes and resources.
        :raises TokenError: the token endpoint refused the request (e.g. ``invalid_client``,
            ``invalid_target`` for a resource the client may not ask for).
        """
        key = self._key(scope, resource)
        current = self._tokens.get(key)
        if current is not None and not _stale(current):
            return current.value
        with self._fetch_lock:
            current = self._tokens.get(key)
            if current is None or _stale(current):
                current = self._fetch(key)
                self._keep(key, current)
        return current.value

    def headers(
        self,
        method: str = "GET",
        url: str | None = None,
        *,
        scope: str | None = None,
        resource: Resource = None,
    ) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for a request (``scope`` and ``resource``
        as for :meth:`token`); with DPoP, the ``DPoP`` scheme and a proof for ``method``
        ``url`` (then required)."""
        return self.auth_headers(self.token(scope=scope, resource=resource), method, url)

    def auth_headers(self, token: str, method: str, url: str | None) -> dict[str, str]:
        """The headers that send ``token`` with a request to ``method`` ``url``."""
        if self.dpop is None:
            return {"Authorization": f"Bearer {token}"}
        if url is None:
            raise ValueError("A DPoP-bound token needs the request's method and URL.")
        return {"Authorization": f"DPoP {token}", "DPoP": self.dpop.proof(method, url, token)}

    def invalidate(self, token: str | None = None) -> None:
        """Drop the cached tokens (only ``token``, when given)."""
        with self._guard:
            for key, cached in list(self._tokens.items()):
                if token in (None, cached.value):
                    del self._tokens[key]

    def renew(self, token: str, *, scope: str | None = None, resource: Resource = None) -> str:
        """The token to use after ``token`` was refused: a new one, fetched once for everyone."""
        self.invalidate(token)
        return self.token(scope=scope, resource=resource)

    def _key(self, scope: str | None, resource: Resource) -> _Key:
        resources = _resources(resource) if resource is not None else self.resource
        return (scope if scope is not None else self.scope, resources)

    def _keep(self, key: _Key, token: _Token) -> None:
        with self._guard:
            if key not in self._tokens and len(self._tokens) >= MAX_CACHED_TOKENS:
                self._tokens.clear()
            self._tokens[key] = token

    def _fetch(self, key: _Key) -> _Token:
        endpoint = self._token_endpoint or self._discover()
        for attempt in (1, 2):
            body, headers = self._token_request(endpoint, key)
            started = time.monotonic()
            self._count_fetch()
            reply = self._send("POST", endpoint, body.encode(), headers)
            if not self._retry_with_nonce(endpoint, reply, attempt):
                break
        return self._accept(reply, started)

    def _retry_with_nonce(self, endpoint: str, reply: _Reply, attempt: int) -> bool:
        """Keep a DPoP nonce the reply carries; True to resend with it (once, RFC 9449 §8)."""
        if self.dpop is None:
            return False
        fresh = self.dpop.remember_nonce(endpoint, reply.headers)
        return attempt == 1 and fresh and _asks_for_nonce(reply)

    def _discover(self) -> str:
        assert self.issuer is not None
        url = get_well_known_url(self.issuer, external=True)
        reply = self._send("GET", url, None, {"Accept": "application/json"}, DiscoveryError)
        self._token_endpoint = self._check_metadata(url, reply)
        return self._token_endpoint

    def _send(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: dict[str, str],
        error: type[TokenError] = TokenError,
    ) -> _Reply:
        options: dict[str, Any] = {"headers": headers, "timeout": self.timeout}
        httpx_module = _httpx()
        requests_module = _requests() if httpx_module is None else None
        if httpx_module is None and requests_module is None:
            raise ImportError(f"flask_m2m.client needs httpx or requests: {_INSTALL}")
        try:
            if httpx_module is not None:
                with httpx_module.Client(verify=self._httpx_verify()) as client:
                    r = client.request(method, url, content=content, **options)
                return _Reply(r.status_code, r.headers, r.content)
            assert requests_module is not None
            r = requests_module.request(method, url, data=content, verify=self.verify, **options)
            return _Reply(r.status_code, r.headers, r.content)
        except OSError as exc:  # requests' errors are OSErrors
            raise self._unreachable(url, exc, error) from exc
        except Exception as exc:
            if httpx_module is not None and isinstance(exc, httpx_module.TransportError):
                raise self._unreachable(url, exc, error) from exc
            raise

    # -- async -------------------------------------------------------------------------------

    async def atoken(self, *, scope: str | None = None, resource: Resource = None) -> str:
        """:meth:`token` for coroutines (needs httpx); one request in flight per event loop."""
        key = self._key(scope, resource)
        current = self._tokens.get(key)
        if current is not None and not _stale(current):
            return current.value
        async with self._async_lock():
            current = self._tokens.get(key)
            if current is None or _stale(current):
                current = await self._afetch(key)
                self._keep(key, current)
        return current.value

    async def aheaders(
        self,
        method: str = "GET",
        url: str | None = None,
        *,
        scope: str | None = None,
        resource: Resource = None,
    ) -> dict[str, str]:
        """:meth:`headers` for coroutines."""
        token = await self.atoken(scope=scope, resource=resource)
        return self.auth_headers(token, method, url)

    async def arenew(
        self, token: str, *, scope: str | None = None, resource: Resource = None
    ) -> str:
        """:meth:`renew` for coroutines."""
        self.invalidate(token)
        return await self.atoken(scope=scope, resource=resource)

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._guard:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
        return lock

    async def _afetch(self, key: _Key) -> _Token:
        endpoint = self._token_endpoint
        if endpoint is None:
            assert self.issuer is not None
            url = get_well_known_url(self.issuer, external=True)
            reply = await self._asend("GET", url, None, {"Accept": "application/json"}, True)
            endpoint = self._token_endpoint = self._check_metadata(url, reply)
        for attempt in (1, 2):
            body, headers = self._token_request(endpoint, key)
            started = time.monotonic()
            self._count_fetch()
            reply = await self._asend("POST", endpoint, body.encode(), headers, False)
            if not self._retry_with_nonce(endpoint, reply, attempt):
                break
        return self._accept(reply, started)

    async def _asend(
        self, method: str, url: str, content: bytes | None, headers: dict[str, str], meta: bool
    ) -> _Reply:
        httpx_module = _httpx()
        if httpx_module is None:
            raise ImportError(f"The async flavour of flask_m2m.client needs httpx: {_INSTALL}")
        error = DiscoveryError if meta else TokenError
        try:
            async with httpx_module.AsyncClient(verify=self._httpx_verify()) as client:
                r = await client.request(
                    method, url, content=content, headers=headers, timeout=self.timeout
                )
        except httpx_module.TransportError as exc:
            raise self._unreachable(url, exc, error) from exc
        return _Reply(r.status_code, r.headers, r.content)

    # -- shared by both ----------------------------------------------------------------------

    def _httpx_verify(self) -> bool | ssl.SSLContext:
        """``verify`` for httpx, which wants an SSL context rather than a CA bundle path."""
        if not isinstance(self.verify, str):
            return self.verify
        with self._guard:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context(cafile=self.verify)
            return self._ssl_context

    def _token_request(self, endpoint: str, key: _Key) -> tuple[str, dict[str, str]]:
        """The form body and headers of a token request (Authlib builds and authenticates it);
        each resource is one ``resource`` parameter (RFC 8707 §2)."""
        scope, resources = key
        params: dict[str, str] = {}
        if scope:
            params["scope"] = scope
        if self.audience:
            params["audience"] = self.audience
        headers = {"Content-Type": _FORM, "Accept": "application/json"}
        if self._signer is not None:  # RFC 7523 §2.2, RFC 7521 §4.2
            params["client_id"] = self.client_id
            params["client_assertion_type"] = ASSERTION_TYPE
            params["client_assertion"] = self._signer.sign(endpoint)
        body = prepare_token_request("client_credentials", **params)
        if resources:
            body += "&" + urlencode([("resource", r) for r in resources])
        if self._signer is not None:
            return body, headers
        assert self._client_auth is not None
        _, headers, body = self._client_auth.prepare("POST", endpoint, headers, body)
        if self.dpop is not None:
            headers["DPoP"] = self.dpop.proof("POST", endpoint)
        return body, headers

    def _accept(self, reply: _Reply, started: float) -> _Token:
        """Turn a token response into a cached token, or raise :class:`TokenError`."""
        data = reply.json()
        if reply.status_code != 200 or not isinstance(data, dict) or "access_token" not in data:
            self._count_failure()
            error = data.get("error") if isinstance(data, dict) else None
            description = data.get("error_description") if isinstance(data, dict) else None
            log.warning(
                "Token request for client %s refused: HTTP %s %s",
                self.client_id,
                reply.status_code,
                error or "",
            )
            raise TokenError(
                str(error or "invalid_response"),
                str(description) if description else None,
                status_code=reply.status_code,
                retry_after=_retry_after(reply.headers),
            )
        wanted = "dpop" if self.dpop is not None else "bearer"
        if str(data.get("token_type", "")).lower() != wanted:
            self._count_failure()
            raise TokenError("unsupported_token_type", f"Expected a {wanted} token.")
        lifetime = data.get("expires_in")
        renew_at = None
        if isinstance(lifetime, int | float) and not isinstance(lifetime, bool):
            renew_at = started + lifetime - self._leeway_for(float(lifetime))
        log.debug("Fetched an access token for client %s (expires_in=%s)", self.client_id, lifetime)
        return _Token(str(data["access_token"]), renew_at)

    def _check_metadata(self, url: str, reply: _Reply) -> str:
        data = reply.json()
        if reply.status_code != 200 or not isinstance(data, dict):
            raise DiscoveryError(
                "invalid_metadata", f"GET {url} gave no metadata", status_code=reply.status_code
            )
        issuer = str(data.get("issuer", "")).rstrip("/")
        if issuer != self.issuer:
            # RFC 8414 §3.3: the metadata must be about the issuer we asked for.
            raise DiscoveryError("invalid_metadata", f"issuer {issuer!r} != {self.issuer!r}")
        endpoint = data.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise DiscoveryError("invalid_metadata", "the metadata has no token_endpoint")
        return endpoint

    def _leeway_for(self, lifetime: float) -> float:
        if self._leeway_share is not None:
            return lifetime * self._leeway_share
        return min(self._leeway, lifetime / 2)

    def _unreachable(self, url: str, exc: Exception, error: type[TokenError]) -> TokenError:
        self._count_failure()
        return error("unreachable", f"{url}: {type(exc).__name__}")

    def _count_fetch(self) -> None:
        with self._guard:
            self.fetch_count += 1

    def _count_failure(self) -> None:
        with self._guard:
            self.failure_count += 1


class ClientCredentialsAuth(_HTTPXAuth):
    """``auth=`` for httpx (``Client``, ``AsyncClient``, module functions) and requests.

    Adds ``Authorization: Bearer`` from ``credentials``; on a 401 it renews the token once and
    sends the request again, returning the second response whatever it is.

    :param retry_on_401: set False to return the first 401 as it is.
    """

    requires_request_body = True  # httpx: buffer the body so that a retry can resend it

    def __init__(
        self,
        credentials: ClientCredentials,
        *,
        retry_on_401: bool = True,
        scope: str | None = None,
        resource: Resource = None,
    ):
        self.credentials = credentials
        self.retry_on_401 = retry_on_401
        self.scope = scope
        self.resource = resource
        self._guard = threading.Lock()
        #: Requests sent again with a renewed token after a 401.
        self.retry_count = 0

    def _count_retry(self) -> None:
        with self._guard:
            self.retry_count += 1

    # httpx

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        creds = self.credentials
        token = creds.token(scope=self.scope, resource=self.resource)
        request.headers.update(creds.auth_headers(token, request.method, str(request.url)))
        response = yield request
        if response.status_code == 401 and self.retry_on_401:
            self._count_retry()
            if not _wants_nonce(creds, str(request.url), response.headers):
                token = self.renew(token)
            request.headers.update(creds.auth_headers(token, request.method, str(request.url)))
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        creds = self.credentials
        token = await creds.atoken(scope=self.scope, resource=self.resource)
        request.headers.update(creds.auth_headers(token, request.method, str(request.url)))
        response = yield request
        if response.status_code == 401 and self.retry_on_401:
            self._count_retry()
            if not _wants_nonce(creds, str(request.url), response.headers):
                token = await creds.arenew(token, scope=self.scope, resource=self.resource)
            request.headers.update(creds.auth_headers(token, request.method, str(request.url)))
            yield request

    # requests

    def renew(self, token: str) -> str:
        """A new token for this object's scopes and resources after ``token`` was refused."""
        return self.credentials.renew(token, scope=self.scope, resource=self.resource)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        creds = self.credentials
        token = creds.token(scope=self.scope, resource=self.resource)
        request.headers.update(creds.auth_headers(token, str(request.method), str(request.url)))
        if self.retry_on_401:
            request.register_hook("response", _RetryOn401(self, token))
        return request


class _RetryOn401:
    """requests response hook: send the request once more with a renewed token after a 401."""

    def __init__(self, auth: ClientCredentialsAuth, token: str):
        self.auth = auth
        self.token = token

    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        body = response.request.body
        if response.status_code != 401 or not (body is None or isinstance(body, bytes | str)):
            return response  # a streamed body cannot be sent twice
        response.content  # noqa: B018 (read it, so that the connection can be reused)
        response.close()
        request = response.request.copy()
        self.auth._count_retry()
        creds, token = self.auth.credentials, self.token
        if not _wants_nonce(creds, str(request.url), response.headers):
            token = self.auth.renew(token)
        request.headers.update(creds.auth_headers(token, str(request.method), str(request.url)))
        retried: requests.Response = response.connection.send(request, **kwargs)
        retried.history.append(response)
        retried.request = request
        return retried


class _AssertionSigner:
    """Signs the client assertions of ``private_key_jwt`` (RFC 7523 §3) with joserfc."""

    def __init__(
        self,
        client_id: str,
        private_key: str | bytes | os.PathLike[str] | Mapping[str, Any],
        lifetime: int,
    ):
        from joserfc.jwk import ECKey, OKPKey, RSAKey
        from joserfc.jws import JWSRegistry

        if not 0 < lifetime <= 3600:
            raise ValueError("assertion_lifetime must be from 1 to 3600 seconds.")
        self.client_id = client_id
        self.lifetime = lifetime
        data: Any = private_key
        if isinstance(private_key, os.PathLike) or (
            isinstance(private_key, str) and not private_key.lstrip().startswith("-----BEGIN")
        ):
            with open(private_key, "rb") as file:  # noqa: PTH123
                data = file.read()
        key: Any = None
        for kind in (RSAKey, ECKey, OKPKey):
            try:
                key = kind.import_key(dict(data) if isinstance(data, Mapping) else data)
                break
            except Exception:  # noqa: BLE001 - joserfc raises several types; try the next kind
                continue
        if key is None or not key.is_private:
            raise ValueError("private_key must be an RSA, EC or Ed25519 private key (PEM or JWK).")
        self.key = key
        curve = key.as_dict(private=False).get("crv")
        self.alg = {"RSA": "RS256", "EC": "ES384" if curve == "P-384" else "ES256"}.get(
            key.key_type, "EdDSA"
        )
        algorithms = dict(JWSRegistry.algorithms)
        quiet = copy.copy(algorithms[self.alg])  # EdDSA: the name servers know (RFC 9864)
        quiet.security_warning = None
        algorithms[self.alg] = quiet
        registry = JWSRegistry(algorithms=[self.alg])
        registry.algorithms = algorithms
        self.registry = registry

    def sign(self, token_endpoint: str) -> str:
        """A fresh assertion for ``token_endpoint`` (its ``aud``), with a new ``jti``."""
        from joserfc import jwt

        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_endpoint,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": self.alg, "typ": "JWT"}
        if self.key.kid:
            header["kid"] = self.key.kid
        return jwt.encode(header, claims, self.key, registry=self.registry)


def _asks_for_nonce(reply: _Reply) -> bool:
    """RFC 9449 §8: the token endpoint wants the nonce its ``DPoP-Nonce`` header carries."""
    data = reply.json()
    return (
        reply.status_code == 400
        and isinstance(data, dict)
        and data.get("error") == "use_dpop_nonce"
    )


def _wants_nonce(creds: ClientCredentials, url: str, headers: Mapping[str, str]) -> bool:
    """RFC 9449 §9: a 401 ``use_dpop_nonce`` with a new ``DPoP-Nonce``: resend with it (the
    token stays good)."""
    if creds.dpop is None:
        return False
    challenge = headers.get("WWW-Authenticate") or headers.get("www-authenticate") or ""
    return creds.dpop.remember_nonce(url, headers) and "use_dpop_nonce" in challenge


def _parse_leeway(leeway: float | str) -> tuple[float, float | None]:
    """``30`` -> 30 seconds (capped at half the lifetime); ``"10%"`` -> a tenth of it."""
    if isinstance(leeway, str):
        text = leeway.strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else None
        except ValueError:
            share = None
        if share is None or not 0 <= share < 1:
            raise ValueError(f"leeway must be seconds or a percentage below 100%, not {leeway!r}")
        return 0.0, share
    if isinstance(leeway, bool) or leeway < 0:
        raise ValueError("leeway must be zero or more seconds.")
    return float(leeway), None


def _resources(resource: Resource) -> tuple[str, ...]:
    """``resource`` as a tuple of distinct, non-empty URIs."""
    if resource is None:
        return ()
    items = [resource] if isinstance(resource, str) else list(resource)
    if not all(isinstance(item, str) and item for item in items):
        raise ValueError("resource must be a URI or a list of URIs.")
    return tuple(dict.fromkeys(items))


def _stale(token: _Token) -> bool:
    return token.renew_at is not None and time.monotonic() >= token.renew_at


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
