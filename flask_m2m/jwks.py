"""The issuer's public keys as a resource server holds them: fetched from its JWK set
(RFC 7517 §5), cached per process, re-fetched within strict bounds.

- A fetched set is used for ``M2M_JWKS_CACHE_SECONDS``; then the next request fetches it again
  (one thread fetches, the others go on with the keys they have).
- A ``kid`` the set lacks (a key rotation at the issuer) fetches the set again, at most once
  per ``M2M_JWKS_MIN_REFRESH_SECONDS``: a flood of made-up ``kid`` values costs one fetch per
  interval, and concurrent requests share that fetch.
- While fetches fail, the keys keep serving up to ``M2M_JWKS_MAX_STALE_SECONDS`` after their
  last successful fetch; the first failure is logged as a warning, the recovery once too.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import Key, import_key

from .remote import Discovery, FetchError, request_json
from .resource_config import ResourceServerSettings

#: Key types a JWS signature of ours can use (RS256, ES256, EdDSA); ``oct`` never.
KEY_TYPES = ("RSA", "EC", "OKP")
#: JWK members that only a private key has: they are dropped, never used.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MIN_RSA_BITS = 2048


def parse_jwk_set(body: Any) -> dict[str, Key]:
    """The usable signature keys of a JWK set, by ``kid``: public RSA, EC and OKP keys with
    a ``kid``; a member that is none of those is skipped.

    :raises FetchError: if ``body`` is no JWK set at all.
    """
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise FetchError('the JWK set is malformed (no "keys" list)')
    keys: dict[str, Key] = {}
    for member in body["keys"]:
        if not isinstance(member, dict) or member.get("kty") not in KEY_TYPES:
            continue
        kid = member.get("kid")
        if not isinstance(kid, str) or not kid or member.get("use", "sig") != "sig":
            continue
        public = {name: value for name, value in member.items() if name not in PRIVATE_MEMBERS}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # joserfc's weak-key warning: judged below
                key = import_key(public)
        except (JoseError, ValueError, TypeError, KeyError):
            continue
        if member["kty"] == "RSA" and _rsa_bits(key) < MIN_RSA_BITS:
            continue
        keys.setdefault(kid, key)
    return keys


def _rsa_bits(key: Key) -> int:
    try:
        return int(key.public_key.key_size)  # type: ignore[union-attr]
    except AttributeError:
        return 0


class RemoteKeys:
    """The issuer's keys for one app, fetched from its ``jwks_uri``."""

    def __init__(
        self, settings: ResourceServerSettings, discovery: Discovery, logger: logging.Logger
    ):
        self.settings = settings
        self.discovery = discovery
        self.logger = logger
        #: The clock of the cache's bounds (a test may stop it).
        self.clock: Callable[[], float] = time.monotonic
        self._keys: dict[str, Key] = {}
        #: ``self.clock()`` of the last successful fetch, and of the last attempt.
        self._fetched_at: float | None = None
        self._attempted_at = -math.inf
        self._lock = threading.Lock()
        self._failing = False
        #: Fetches this process made (successful or not), for tests and metrics.
        self.fetch_count = 0

    def key(self, kid: str) -> Key | None:
        """The public key named ``kid``, fetching the set when it is old or lacks ``kid``
        (within the bounds above); None if the issuer has no such key that can be used."""
        now = self.clock()
        fetched_at = self._fetched_at
        if fetched_at is None or now - fetched_at >= self.settings.jwks_cache_seconds:
            # with no usable key yet, or for a kid we lack, wait for the fetch
            self._refresh(now, wait=fetched_at is None or kid not in self._keys)
        key = self._keys.get(kid)
        if key is None and now - self._attempted_at >= self.settings.jwks_min_refresh_seconds:
            self._refresh(now, wait=True)
            key = self._keys.get(kid)
        fetched_at = self._fetched_at
        if key is None or fetched_at is None:
            return None
        if now - fetched_at > self.settings.jwks_max_stale_seconds:
            return None  # too old to trust, and no newer set could be fetched
        return key

    def _refresh(self, asked_at: float, wait: bool) -> None:
        """Fetch the set, unless it was tried less than ``M2M_JWKS_MIN_REFRESH_SECONDS`` ago
        or by another thread since ``asked_at``; ``wait=False`` skips it when another thread
        is fetching."""
        if self.clock() - self._attempted_at < self.settings.jwks_min_refresh_seconds:
            return
        timeout = 2 * self.settings.http_timeout_seconds + 1
        if not self._lock.acquire(blocking=wait, timeout=timeout if wait else -1):
            return
        try:
            if self._attempted_at >= asked_at:
                return  # another thread fetched while this one waited
            self._attempted_at = self.clock()
            self.fetch_count += 1
            try:
                keys = self._fetch()
            except FetchError as exc:
                self._failed(exc)
                return
            self._keys = keys
            self._fetched_at = self.clock()
            if self._failing:
                self._failing = False
                self.logger.warning("flask-m2m: the JWK set of %s is fetched again.", self._issuer)
        finally:
            self._lock.release()

    @property
    def _issuer(self) -> str:
        return self.settings.issuer

    def _fetch(self) -> dict[str, Key]:
        limits = self.discovery.limits
        try:
            answer = request_json(self.discovery.url("jwks_uri"), limits)
            if answer.status != 200:
                raise FetchError(f"the JWK set answered HTTP {answer.status}")
            return parse_jwk_set(answer.body)
        except FetchError:
            self.discovery.forget()
            raise

    def _failed(self, error: FetchError) -> None:
        """Log the first failure of a run (later ones at debug level)."""
        if self._failing:
            self.logger.debug("flask-m2m: JWK set of %s still unavailable: %s", self._issuer, error)
            return
        self._failing = True
        if self._fetched_at is None:
            self.logger.warning(
                "flask-m2m: the JWK set of %s cannot be fetched (%s); tokens cannot be "
                "verified until it can (retried at most every %g s).",
                self._issuer,
                error,
                self.settings.jwks_min_refresh_seconds,
            )
        else:
            self.logger.warning(
                "flask-m2m: the JWK set of %s cannot be fetched (%s); the keys fetched %.0f s "
                "ago keep serving for at most %g s after that fetch.",
                self._issuer,
                error,
                self.clock() - self._fetched_at,
                self.settings.jwks_max_stale_seconds,
            )
