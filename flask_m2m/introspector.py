"""Asking the authorization server about a token (RFC 7662), as a resource server does for
opaque tokens, or for every token with ``M2M_INTROSPECTION = "always"``.

The resource server authenticates with its own client credentials (a client holding
``m2m:introspect`` on a flask-m2m server, which may then see any client's token). An answer is
reused for at most ``M2M_INTROSPECTION_CACHE_SECONDS`` and never past the token's ``exp``; an
inactive answer is reused as long, so that a flood of bad tokens does not become a flood of
requests. The resource server judges the answer itself: ``active``, ``iss``, and an ``aud``
that names it (the server tells an introspecting client about tokens meant for others).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote_plus, urlencode

from .errors import TemporarilyUnavailable
from .remote import Discovery, FetchError, request_json
from .resource_config import ResourceServerSettings
from .verification import AccessToken, TokenRejected, check_claims, numeric_date


@dataclass(slots=True)
class _Answer:
    token: AccessToken | None  # None: inactive
    until: float  # self.clock() after which it is asked again


def token_from_answer(body: Any, opaque: bool, issuer: str) -> AccessToken | None:
    """The token an RFC 7662 §2.2 answer describes; None if it is not active or does not say
    who the client is, for whom, and until when (``client_id``, ``aud``, ``exp``).

    :param issuer: the ``iss`` to assume when the answer has none (the server asked).
    """
    if not isinstance(body, dict) or body.get("active") is not True:
        return None
    try:
        aud = body["aud"]
        audience = (aud,) if isinstance(aud, str) else tuple(str(a) for a in aud)
        client_id, scope = body["client_id"], body.get("scope") or ""
        if not isinstance(client_id, str) or not isinstance(scope, str) or not audience:
            return None
        iat, nbf = body.get("iat"), body.get("nbf")
        return AccessToken(
            client_id=client_id,
            scopes=tuple(scope.split()),
            jti=str(body.get("jti") or ""),
            issued_at=int(time.time()) if iat is None else numeric_date(iat),
            expires_at=numeric_date(body["exp"]),
            issuer=str(body.get("iss") or issuer),
            audience=audience,
            claims=dict(body),
            opaque=opaque,
            not_before=None if nbf is None else numeric_date(nbf),
            jkt=_jkt(body.get("cnf")),
        )
    except (KeyError, TypeError, ValueError):
        return None


class Introspector:
    """Introspects tokens at the issuer's ``introspection_endpoint`` for one app."""

    def __init__(
        self, settings: ResourceServerSettings, discovery: Discovery, logger: logging.Logger
    ):
        self.settings = settings
        self.discovery = discovery
        self.logger = logger
        #: The clock of the cache's bounds (a test may stop it).
        self.clock: Callable[[], float] = time.monotonic
        secret = f"{quote_plus(str(settings.introspection_client_id))}:" + quote_plus(
            str(settings.introspection_client_secret)
        )
        # RFC 6749 §2.3.1: client_secret_basic, id and secret form-encoded first.
        self._authorization = "Basic " + base64.b64encode(secret.encode()).decode()
        self._cache: dict[bytes, _Answer] = {}
        self._failing = False
        #: Requests this process sent, for tests and metrics.
        self.request_count = 0

    def authenticate(self, token_string: str, opaque: bool) -> AccessToken:
        """The token, if the issuer says it is active and its claims hold for this service.

        :raises TokenRejected: inactive, or for another issuer or audience, or expired.
        :raises TemporarilyUnavailable: the issuer cannot be asked (503).
        """
        settings = self.settings
        key = hashlib.sha256(token_string.encode()).digest()
        now = self.clock()
        answer = self._cache.get(key)
        if answer is None or answer.until <= now:
            token = token_from_answer(self._ask(token_string), opaque, settings.issuer)
            until = now + settings.introspection_cache_seconds
            if token is not None:
                until = min(until, now + token.expires_at - time.time())
            answer = _Answer(token, until)
            self._remember(key, answer)
        token = answer.token
        if token is None:
            raise TokenRejected("The access token is not active.")
        check_claims(token, settings.issuer, settings.audience, settings.leeway)
        return token

    def _ask(self, token_string: str) -> Any:
        """The JSON answer of the introspection endpoint (RFC 7662 §2.1)."""
        form = urlencode({"token": token_string, "token_type_hint": "access_token"}).encode()
        self.request_count += 1
        try:
            url = self.discovery.url("introspection_endpoint")
            answer = request_json(
                url,
                self.discovery.limits,
                form=form,
                headers={"Authorization": self._authorization},
            )
        except FetchError as exc:
            self.discovery.forget()
            self._unavailable(str(exc))
        if answer.status in (401, 403):
            self._unavailable(
                f"HTTP {answer.status}: the introspection credentials were refused (check "
                "M2M_INTROSPECTION_CLIENT_ID and _SECRET; the client needs m2m:introspect)"
            )
        if answer.status != 200 or not isinstance(answer.body, dict):
            self._unavailable(f"HTTP {answer.status}")
        if self._failing:
            self._failing = False
            self.logger.warning(
                "flask-m2m: the introspection endpoint of %s answers again.", self.settings.issuer
            )
        return answer.body

    def _unavailable(self, reason: str) -> NoReturn:
        """Log the first failure of a run, and refuse the request with 503."""
        if not self._failing:
            self._failing = True
            self.logger.warning(
                "flask-m2m: the introspection endpoint of %s cannot be used (%s); tokens it "
                "must check are answered 503 until it can.",
                self.settings.issuer,
                reason,
            )
        raise TemporarilyUnavailable()

    def _remember(self, key: bytes, answer: _Answer) -> None:
        limit = self.settings.token_cache_size
        if limit == 0 or answer.until <= self.clock():
            return
        if len(self._cache) >= limit:
            now = self.clock()
            for old in [k for k, a in list(self._cache.items()) if a.until <= now]:
                self._cache.pop(old, None)
            if len(self._cache) >= limit:
                for old in list(self._cache)[: len(self._cache) // 2 + 1]:
                    self._cache.pop(old, None)
        self._cache[key] = answer


def _jkt(cnf: Any) -> str | None:
    """RFC 9449 §6.2: the ``cnf.jkt`` of a DPoP-bound token's introspection answer.

    :raises ValueError: for a ``cnf`` this service cannot check (the token is then refused).
    """
    if cnf is None:
        return None
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise ValueError("cnf without a jkt")
    return jkt
