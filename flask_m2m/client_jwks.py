"""Clients' public keys for ``private_key_jwt`` (RFC 7523 §2.2): checking a registered JWK Set
(RFC 7517 §5) or ``jwks_uri``, and fetching and caching the sets clients publish.

A ``jwks_uri`` is fetched by the server, so it is a way for whoever registers a client to make
the server send requests (server-side request forgery). Outside development
(``M2M_JWKS_URI_ALLOW_INSECURE``) only ``https`` URIs are accepted and the host's addresses are
resolved and refused when any is private, loopback, link-local or otherwise not global. The
fetch has a timeout (``M2M_JWKS_URI_TIMEOUT``, also bounding the whole read), a size cap
(``M2M_JWKS_URI_MAX_BYTES``) and follows no redirect. A fetched set is kept for
``M2M_JWKS_URI_CACHE_SECONDS`` and fetched again for an unknown ``kid`` at most once per
``M2M_JWKS_URI_REFETCH_SECONDS``.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey

from .errors import InvalidClientData
from .policy import (
    ASSERTION_ALGS,
    CLIENT_AUTH_METHODS,
    KEY_METHODS,
    MAX_CLIENT_KEYS,
    MAX_JWKS_BYTES,
    MAX_JWKS_URI_LENGTH,
    MAX_KID_LENGTH,
    MIN_RSA_BITS,
)

log = logging.getLogger(__name__)

#: Members of a private key (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2): never in a client's set.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: Key types and curves a client key may have.
CURVES = {"EC": ("P-256", "P-384"), "OKP": ("Ed25519",)}
#: Most clients whose fetched sets one process keeps.
MAX_CACHED_SETS = 1000


class KeysUnavailable(Exception):
    """A client's ``jwks_uri`` could not be used; the message says why (for the log only)."""


def check_jwks(value: Any) -> dict[str, Any]:
    """A client's public JWK Set, checked: 1 to :data:`MAX_CLIENT_KEYS` RSA, EC or OKP
    signature keys, no private members, distinct ``kid`` values, allowed ``alg`` values.

    :raises ValueError: whose message says what is wrong.
    """
    if isinstance(value, dict) and "keys" not in value and "kty" in value:
        value = {"keys": [value]}  # a single JWK stands for the set of that key
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise ValueError('Expected a JWK Set: {"keys": [...]}.')
    if len(json.dumps(value)) > MAX_JWKS_BYTES:
        raise ValueError(f"The JWK Set is larger than {MAX_JWKS_BYTES} bytes.")
    keys = value["keys"]
    if not 1 <= len(keys) <= MAX_CLIENT_KEYS:
        raise ValueError(f"A JWK Set of 1 to {MAX_CLIENT_KEYS} keys is expected.")
    kids: set[str] = set()
    for index, key in enumerate(keys):
        _check_key(key, f"keys[{index}]")
        kid = key.get("kid")
        if kid is not None:
            if kid in kids:
                raise ValueError(f"keys[{index}]: kid {kid!r} is repeated.")
            kids.add(kid)
    return {"keys": [dict(key) for key in keys]}


def _check_key(key: Any, where: str) -> None:
    """One public signature key of an allowed type; raise ValueError naming ``where``."""
    if not isinstance(key, dict):
        raise ValueError(f"{where}: a JWK (JSON object) is expected.")
    kty = key.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        raise ValueError(f"{where}: kty must be RSA, EC or OKP.")
    private = sorted(PRIVATE_MEMBERS & set(key))
    if private:
        raise ValueError(f"{where}: a private key (has {', '.join(private)}); give the public key.")
    if kty in CURVES and key.get("crv") not in CURVES[kty]:
        raise ValueError(f"{where}: crv must be one of {', '.join(CURVES[kty])}.")
    if "alg" in key and key["alg"] not in ASSERTION_ALGS:
        raise ValueError(f"{where}: alg must be one of {', '.join(ASSERTION_ALGS)}.")
    if key.get("use", "sig") != "sig":
        raise ValueError(f'{where}: use must be "sig".')
    kid = key.get("kid")
    if kid is not None and not (isinstance(kid, str) and 0 < len(kid) <= MAX_KID_LENGTH):
        raise ValueError(f"{where}: kid must be a string of 1 to {MAX_KID_LENGTH} characters.")
    try:
        imported = KeySet.import_key_set({"keys": [key]}).keys[0]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{where}: not a valid JWK ({type(exc).__name__}).") from None
    if kty == "RSA":
        bits = imported.get_op_key("verify").key_size  # type: ignore[union-attr]
        if bits < MIN_RSA_BITS:
            raise ValueError(f"{where}: an RSA key of at least {MIN_RSA_BITS} bits is expected.")


def check_jwks_uri(value: Any, allow_insecure: bool) -> str:
    """A ``jwks_uri``: an absolute ``https`` URL (``http`` too when ``allow_insecure``),
    without credentials or fragment, at most :data:`MAX_JWKS_URI_LENGTH` characters.

    :raises ValueError: whose message says what is wrong.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_JWKS_URI_LENGTH:
        raise ValueError(f"A URL of at most {MAX_JWKS_URI_LENGTH} characters is expected.")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("Not a valid URL.") from None
    schemes = ("https", "http") if allow_insecure else ("https",)
    if parts.scheme not in schemes:
        raise ValueError("Only an https URL is accepted.")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError("The URL must name a host and no credentials.")
    if parts.fragment or (port is not None and not 0 < port < 65536):
        raise ValueError("The URL must have no fragment and a valid port.")
    return value


def check_client_keys(
    method: Any, jwks: Any, jwks_uri: Any, *, allow_insecure: bool
) -> tuple[str, dict[str, Any] | None, str | None]:
    """A client's ``token_endpoint_auth_method`` with its keys, checked: a ``private_key_jwt``
    client has ``jwks`` or ``jwks_uri`` (one of them), a secret client neither.

    :raises InvalidClientData: (422) naming the field at fault.
    """
    if method not in CLIENT_AUTH_METHODS:
        raise InvalidClientData(
            f"Must be one of {', '.join(CLIENT_AUTH_METHODS)}.", field="token_endpoint_auth_method"
        )
    if method not in KEY_METHODS:
        if jwks is not None or jwks_uri is not None:
            raise InvalidClientData(
                "Only a private_key_jwt client has keys.", field="jwks" if jwks else "jwks_uri"
            )
        return method, None, None
    if (jwks is None) == (jwks_uri is None):
        raise InvalidClientData("Give jwks or jwks_uri (one of them).", field="jwks")
    try:
        if jwks is not None:
            return method, check_jwks(jwks), None
    except ValueError as exc:
        raise InvalidClientData(str(exc), field="jwks") from None
    try:
        return method, None, check_jwks_uri(jwks_uri, allow_insecure)
    except ValueError as exc:
        raise InvalidClientData(str(exc), field="jwks_uri") from None


def parse_public_keys(text: str) -> dict[str, Any]:
    """A JWK Set from the text of a file: a JWK Set, a single JWK or a PEM public key (whose
    ``kid`` is its RFC 7638 thumbprint), checked by :func:`check_jwks`.

    :raises ValueError: whose message says what is wrong.
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        if "PRIVATE KEY" in text.split("\n", 1)[0]:
            raise ValueError(
                "This is a private key: give its public key (openssl pkey -pubout -in KEY)."
            )
        key = _import_pem(text)
        data = dict(key.as_dict(private=False))
        data["kid"] = key.thumbprint()
        return check_jwks({"keys": [data]})
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("Neither JSON (a JWK Set or a JWK) nor a PEM public key.") from None
    return check_jwks(value)


def _import_pem(text: str) -> Key:
    """The RSA, EC or OKP public key of a PEM text."""
    for kind in (RSAKey, ECKey, OKPKey):
        try:
            return kind.import_key(text)
        except (JoseError, ValueError, TypeError):
            continue
    raise ValueError("Not a PEM public key of RSA, EC or Ed25519.")


def describe_keys(jwks: dict[str, Any] | None, jwks_uri: str | None) -> dict[str, Any]:
    """What the audit trail records of a client's keys: their ``kid`` values and RFC 7638
    thumbprints, or the ``jwks_uri``."""
    if jwks_uri is not None:
        return {"jwks_uri": jwks_uri}
    keys = KeySet.import_key_set(jwks).keys if jwks else []  # type: ignore[arg-type]
    return {"keys": [{"kid": key.kid, "thumbprint": key.thumbprint()} for key in keys]}


def check_public_address(host: str, port: int) -> str:
    """Resolve ``host`` and refuse it unless every address is global (not private, loopback,
    link-local, multicast, reserved or unspecified); return the first, to connect to.

    :raises KeysUnavailable: for an address refused or a name that does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise KeysUnavailable(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            raise KeysUnavailable(f"{host!r} resolves to a non-public address ({address})")
    if not infos:
        raise KeysUnavailable(f"{host!r} resolves to no address")
    return str(infos[0][4][0])


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to ``address``, the one the host name resolved to when it was
    checked, with the certificate verified for the host name: the name is not resolved again,
    so a second answer of the name's DNS (rebinding) cannot point the fetch elsewhere."""

    def __init__(
        self, host: str, port: int, address: str, *, timeout: float, context: ssl.SSLContext
    ):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


_TLS = ssl.create_default_context()


def fetch_jwks(uri: str, *, timeout: float, max_bytes: int, allow_insecure: bool) -> KeySet:
    """GET ``uri`` and return its checked JWK Set, within ``timeout`` seconds in all and
    ``max_bytes`` bytes, following no redirect. Outside development the connection goes to
    the address :func:`check_public_address` accepted.

    :raises KeysUnavailable: for any failure (refused address, network, status, size, time,
        content).
    """
    try:
        check_jwks_uri(uri, allow_insecure)
    except ValueError as exc:
        raise KeysUnavailable(str(exc)) from None
    parts = urlsplit(uri)
    host, https = parts.hostname or "", parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    connection: http.client.HTTPConnection
    if not allow_insecure:  # https only (check_jwks_uri)
        address = check_public_address(host, port)
        connection = PinnedHTTPSConnection(host, port, address, timeout=timeout, context=_TLS)
    elif https:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=_TLS)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    deadline = time.monotonic() + timeout
    body = b""
    try:
        connection.request("GET", target, headers={"Accept": "application/json"})
        response = connection.getresponse()
        if response.status != 200:  # a redirect too: none is followed
            raise KeysUnavailable(f"status {response.status}")
        while len(body) <= max_bytes:
            if time.monotonic() > deadline:
                raise KeysUnavailable("too slow")
            chunk = response.read1(8192)
            if not chunk:
                break
            body += chunk
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise KeysUnavailable(f"{type(exc).__name__}: {exc}") from None
    finally:
        connection.close()
    if len(body) > max_bytes:
        raise KeysUnavailable(f"larger than {max_bytes} bytes")
    try:
        return KeySet.import_key_set(check_jwks(json.loads(body)))  # type: ignore[arg-type]
    except (ValueError, JoseError) as exc:
        raise KeysUnavailable(f"not a valid JWK Set: {exc}") from None


@dataclass(slots=True)
class _Fetched:
    keys: KeySet
    fetched_at: float


class PublishedKeys:
    """The JWK Sets clients publish at their ``jwks_uri``, as this process fetched them."""

    def __init__(
        self,
        *,
        timeout: float,
        max_bytes: int,
        cache_seconds: float,
        refetch_seconds: float,
        allow_insecure: bool,
    ):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.cache_seconds = cache_seconds
        self.refetch_seconds = refetch_seconds
        self.allow_insecure = allow_insecure
        self._sets: dict[str, _Fetched] = {}
        #: When each failing URI last failed: not tried again within ``refetch_seconds``.
        self._failed: dict[str, float] = {}
        #: One lock per URI being fetched: concurrent requests wait for the one fetch.
        self._fetching: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, uri: str, *, refresh: bool = False) -> KeySet:
        """The set at ``uri``: cached while younger than ``cache_seconds``; with ``refresh``
        (an unknown ``kid``), fetched again unless it was fetched in the last
        ``refetch_seconds``. Requests asking together share one fetch.

        :raises KeysUnavailable: when it must be fetched and cannot be.
        """
        asked_at = time.monotonic()
        keys = self._cached(uri, asked_at, refresh)
        if keys is not None:
            return keys
        with self._lock:
            if len(self._fetching) >= MAX_CACHED_SETS:
                self._fetching.clear()
            fetching = self._fetching.setdefault(uri, threading.Lock())
        with fetching:
            with self._lock:
                done, failed_at = self._sets.get(uri), self._failed.get(uri)
            # another request fetched it, or failed to, while this one waited
            if done is not None and done.fetched_at >= asked_at:
                return done.keys
            if failed_at is not None and failed_at >= asked_at:
                raise KeysUnavailable("the fetch this request waited for failed")
            return self._fetch(uri)

    def _cached(self, uri: str, now: float, refresh: bool) -> KeySet | None:
        """The cached set when it may serve, None when it must be fetched.

        :raises KeysUnavailable: if fetching it failed within ``refetch_seconds``.
        """
        with self._lock:
            cached = self._sets.get(uri)
            failed_at = self._failed.get(uri)
        if cached is not None:
            age = now - cached.fetched_at
            if age < self.cache_seconds and not (refresh and age >= self.refetch_seconds):
                return cached.keys
        if failed_at is not None and now - failed_at < self.refetch_seconds:
            raise KeysUnavailable("failed recently; not fetched again yet")
        return None

    def _fetch(self, uri: str) -> KeySet:
        try:
            keys = fetch_jwks(
                uri,
                timeout=self.timeout,
                max_bytes=self.max_bytes,
                allow_insecure=self.allow_insecure,
            )
        except KeysUnavailable as exc:
            log.warning("flask-m2m: cannot use a client's jwks_uri: %s", exc)
            with self._lock:
                if len(self._failed) >= MAX_CACHED_SETS:
                    self._failed.clear()
                self._failed[uri] = time.monotonic()
            raise
        with self._lock:
            self._failed.pop(uri, None)
            if len(self._sets) >= MAX_CACHED_SETS:
                self._sets.clear()
            self._sets[uri] = _Fetched(keys, time.monotonic())
        return keys

    def forget(self, uri: str) -> None:
        """Drop the cached set of ``uri`` (its client changed its keys)."""
        with self._lock:
            self._sets.pop(uri, None)
            self._failed.pop(uri, None)
