"""Signing keys: generated on first use, stored encrypted, shared by every instance, rotated.

Each process keeps the imported keys in memory and re-reads the key table at most every
``M2M_KEY_REFRESH_SECONDS`` (or at once when a token names a key it has not seen), so that
no request pays for loading a key. A key made by :meth:`KeyStore.rotate` signs in the other
processes only ``M2M_KEY_PUBLICATION_SECONDS`` after it was made, by which time every one of
them has re-read the table and publishes it.

Access tokens are signed by a :class:`Signer` of the active key: its protected header is
serialised once per key, and each token costs the JSON of its claims and one signature by
``cryptography`` (RFC 7515 §7.1 compact serialisation, RFC 7518 §3.3, §3.4; RFC 8037 §3.1).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet, OctKey, OKPKey, RSAKey, import_key
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from . import writes
from .config import Settings
from .credentials import derive_key
from .errors import ConfigurationError
from .models import Models, utcnow

_JWE_HEADER = {"alg": "dir", "enc": "A256GCM"}
_JWE_ALGS = ["dir", "A256GCM"]
#: Shortest pause between two refreshes caused by unknown ``kid`` values.
_UNKNOWN_KID_REFRESH_SECONDS = 2.0


def generate_key(alg: str) -> Key:
    """A new private key for ``alg`` with ``kid`` (RFC 7638 thumbprint), ``alg`` and ``use``."""
    key: Key
    if alg == "RS256":
        key = RSAKey.generate_key(2048, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        key = OKPKey.generate_key("Ed25519", private=True)
    key.ensure_kid()
    return import_key({**key.as_dict(private=True), "alg": alg, "use": "sig"})


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class Signer:
    """Signs JWTs with one private key: ``base64url(header) "." base64url(claims)``, then the
    signature over those bytes (RFC 7515 §5.1).

    The header (``alg``, ``typ``, ``kid``) is serialised once; a token costs the JSON of its
    claims (as joserfc writes them: compact, UTF-8) and one signature: RSASSA-PKCS1-v1_5 with
    SHA-256 (RS256), ECDSA P-256 with SHA-256 as the 64-byte ``R || S`` (ES256, RFC 7518
    §3.4), or Ed25519 (EdDSA, RFC 8037 §3.1).

    :raises ConfigurationError: for a key that does not fit ``alg``.
    """

    def __init__(self, key: Key, alg: str, typ: str):
        #: The key's ``kid``, named in the header.
        self.kid = str(key.kid)
        header = {"typ": typ, "alg": alg, "kid": self.kid}
        self._prefix = _b64url(json.dumps(header, separators=(",", ":")).encode()) + b"."
        self._sign = _signature_function(key.private_key, alg)

    def sign(self, claims: dict[str, Any]) -> str:
        """The compact JWS of ``claims``.

        :raises TypeError: if a claim is no JSON value.
        """
        payload = json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode()
        signing_input = self._prefix + _b64url(payload)
        return (signing_input + b"." + _b64url(self._sign(signing_input))).decode("ascii")


def _signature_function(private: Any, alg: str) -> Callable[[bytes], bytes]:
    """The function that signs a JWS signing input with ``private`` for ``alg``."""
    if alg == "RS256" and isinstance(private, rsa.RSAPrivateKey):
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        return lambda data: private.sign(data, pkcs1, sha256)
    if (
        alg == "ES256"
        and isinstance(private, ec.EllipticCurvePrivateKey)
        and isinstance(private.curve, ec.SECP256R1)
    ):
        ecdsa = ec.ECDSA(hashes.SHA256())

        def es256(data: bytes) -> bytes:
            r, s = decode_dss_signature(private.sign(data, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return es256
    if alg == "EdDSA" and isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign
    raise ConfigurationError(f"The signing key does not fit {alg}.")


def public_jwk(key: Key) -> dict[str, Any]:
    """The public JWK of ``key`` (never any private member)."""
    return dict(key.as_dict(private=False))


class KeyStore:
    """The signing key of one app and the public keys it publishes and accepts."""

    def __init__(self, settings: Settings, models: Models, db: Any):
        self.settings = settings
        self.models = models
        self.db = db
        #: The key that encrypts stored signing keys, then those of older master secrets.
        self._encryption_keys = [
            OctKey.import_key(derive_key(master, "flask-m2m signing-key encryption"))
            for master in settings.master_secrets
        ]
        self._lock = threading.Lock()
        self._loaded_at = float("-inf")
        self._unknown_kid_at = float("-inf")
        #: Held while an unknown kid is looked up, so that concurrent requests naming the same
        #: new key wait for that one reload instead of being refused meanwhile.
        self._unknown_kid_lock = threading.Lock()
        self._signing: Key | None = None
        self._signer: Signer | None = None
        self._public: dict[str, Key] = {}
        self._private_cache: dict[str, Key] = {}
        #: Keys this process made: it may sign with them at once (the others wait until
        #: every process has had time to publish them).
        self._own_kids: set[str] = set()
        if settings.signing_keys is not None:
            self._load_configured(settings.signing_keys)

    @property
    def from_config(self) -> bool:
        """Whether the keys come from ``M2M_SIGNING_KEYS`` rather than the database."""
        return self.settings.signing_keys is not None

    @property
    def retention(self) -> timedelta:
        """How long a retired key stays published: until every token it signed has expired
        (other processes sign with it until its successor is published, and then until their
        next re-read of the table)."""
        s = self.settings
        return timedelta(
            seconds=s.longest_token_lifetime
            + s.key_publication_delay
            + s.key_refresh_seconds
            + s.leeway
        )

    # -- reading ---------------------------------------------------------------------------
    def signing_key(self) -> Key:
        """The private key new tokens are signed with (creating the first one if needed)."""
        self._refresh_if_stale()
        assert self._signing is not None
        return self._signing

    def signer(self) -> Signer:
        """The :class:`Signer` of :meth:`signing_key`, made once per key."""
        key = self.signing_key()
        signer = self._signer
        if signer is None or signer.kid != key.kid:
            signer = self._signer = Signer(key, self.settings.signing_alg, "at+jwt")
        return signer

    def public_key(self, kid: str) -> Key | None:
        """The published public key named ``kid``; an unknown kid triggers a (bounded) reload."""
        self._refresh_if_stale()
        key = self._public.get(kid)
        if key is None and not self.from_config:
            with self._unknown_kid_lock:
                key = self._public.get(kid)  # perhaps loaded by the reload just waited for
                now = time.monotonic()
                if key is None and now - self._unknown_kid_at >= _UNKNOWN_KID_REFRESH_SECONDS:
                    self._unknown_kid_at = now
                    self.refresh(wait=True)
                    key = self._public.get(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        """The public JWK set (RFC 7517 §5) served at ``jwks.json``."""
        self._refresh_if_stale()
        return {"keys": [public_jwk(key) for key in self._public.values()]}

    # -- loading ---------------------------------------------------------------------------
    def _load_configured(self, jwks: dict[str, Any]) -> None:
        try:
            keyset = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except Exception as exc:
            raise ConfigurationError(f"M2M_SIGNING_KEYS cannot be imported: {exc}") from exc
        alg = self.settings.signing_alg
        for key in keyset:
            key.ensure_kid()
            published = {"alg": key.get("alg", alg), "use": "sig", **public_jwk(key)}
            self._public[str(key.kid)] = import_key(published)
        for key in keyset:
            if key.is_private and key.get("alg", alg) == alg:
                self._signing = import_key({**key.as_dict(private=True), "alg": alg})
                break
        if self._signing is None:
            raise ConfigurationError(f"M2M_SIGNING_KEYS holds no private {alg} key.")
        self._loaded_at = float("inf")

    def _refresh_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at >= self.settings.key_refresh_seconds:
            self.refresh()

    def refresh(self, wait: bool = False) -> None:
        """Re-read the key table (creating a signing key if none is active).

        :param wait: wait for a reload under way in another thread rather than skip this one.
        """
        if self.from_config:
            return
        # While one thread reloads, the others keep using the keys they have (and hold no
        # second database connection meanwhile).
        if not self._lock.acquire(blocking=wait or self._signing is None):
            return
        try:
            self._reload()
        finally:
            self._lock.release()

    def _reload(self) -> None:
        with self._session() as session:
            model = self.models.signing_key
            rows = list(session.execute(select(model)).scalars())
            if not self._active(rows):
                if writes.app_holds_write_lock(self.db):  # SQLite: waiting would deadlock
                    raise writes.AppHoldsWriteLock()
                self._insert(session, generate_key(self.settings.signing_alg))
                rows = list(session.execute(select(model)).scalars())
            now = utcnow()
            public = {}
            for row in rows:
                if row.retired_at is None or row.retired_at > now - self.retention:
                    public[row.kid] = self._public.get(row.kid) or import_key(row.public_jwk)
            active = self._signing_row(rows)
            signing = self._private_cache.get(active.kid)
            if signing is None:
                signing = self._decrypt(active.private_jwk_encrypted)
                self._private_cache = {active.kid: signing}
            self._public, self._signing = public, signing
            self._loaded_at = time.monotonic()

    def _session(self) -> Session:
        """A session of its own, so key reads never touch the request's transaction."""
        return Session(self.db.engine, expire_on_commit=False)

    def _active(self, rows: list[Any]) -> Any | None:
        """The newest unretired key of the configured algorithm."""
        alg = self.settings.signing_alg
        return _newest([r for r in rows if r.retired_at is None and r.alg == alg])

    def _signing_row(self, rows: list[Any]) -> Any:
        """The key to sign with: the newest one every process has had time to publish (or
        one this process made), kept until its successor has been published for as long;
        else the newest such key even if retired; else (a first key just made elsewhere) the
        newest unretired one."""
        alg = self.settings.signing_alg
        published = utcnow() - timedelta(seconds=self.settings.key_publication_delay)
        own = self._own_kids
        ready = [r for r in rows if r.alg == alg and (r.created_at <= published or r.kid in own)]
        current = [r for r in ready if r.retired_at is None or r.retired_at > published]
        return _newest(current) or _newest(ready) or self._active(rows)

    def _insert(self, session: Session, key: Key, created_at: datetime | None = None) -> None:
        row = self.models.signing_key(
            kid=str(key.kid),
            alg=str(key.alg),
            public_jwk=public_jwk(key),
            private_jwk_encrypted=self._encrypt(key),
            created_at=created_at or utcnow(),
        )
        session.add(row)
        session.commit()
        self._own_kids.add(row.kid)

    def _encrypt(self, key: Key) -> str:
        """``key``'s private JWK, encrypted under the current master secret (JWE compact)."""
        plaintext = json.dumps(key.as_dict(private=True)).encode()
        return jwe.encrypt_compact(
            _JWE_HEADER, plaintext, self._encryption_keys[0], algorithms=_JWE_ALGS
        )

    def _decrypt(self, encrypted: str) -> Key:
        """The private key in ``encrypted``, under the current master secret or an older one."""
        return self._open(encrypted)[0]

    def _open(self, encrypted: str) -> tuple[Key, bool]:
        """The private key in ``encrypted``, and whether the current master secret encrypted it.

        :raises ConfigurationError: if no master secret (current or fallback) decrypts it.
        """
        for index, encryption_key in enumerate(self._encryption_keys):
            try:
                plaintext = jwe.decrypt_compact(
                    encrypted, encryption_key, algorithms=_JWE_ALGS
                ).plaintext
            except (JoseError, ValueError):  # not this master secret: try the next
                continue
            assert plaintext is not None
            return import_key(json.loads(plaintext)), index == 0
        raise ConfigurationError(
            "A stored signing key cannot be decrypted: M2M_KEY_ENCRYPTION_SECRET (or "
            "SECRET_KEY) differs from the one that encrypted it, and no fallback matches."
        )

    def reencrypt(self) -> tuple[int, int]:
        """Encrypt every stored signing key under the current master secret.

        :returns: how many keys were re-encrypted, and how many were already current.
        :raises ConfigurationError: if a key cannot be decrypted with any master secret.
        """
        if self.from_config:
            raise ConfigurationError(
                "Signing keys come from M2M_SIGNING_KEYS; there is nothing to re-encrypt."
            )
        model = self.models.signing_key
        changed = current = 0
        with self._session() as session:
            for row in session.execute(select(model).with_for_update()).scalars():
                key, is_current = self._open(row.private_jwk_encrypted)
                if is_current:
                    current += 1
                else:
                    row.private_jwk_encrypted = self._encrypt(key)
                    changed += 1
            session.commit()
        return changed, current

    # -- rotation --------------------------------------------------------------------------
    def rotate(self) -> str:
        """Add a new signing key, retire the others, and drop keys no token can still need.

        :returns: the new key's ``kid``.
        """
        if self.from_config:
            raise ConfigurationError(
                "Signing keys come from M2M_SIGNING_KEYS; rotate them in the configuration."
            )
        model = self.models.signing_key
        now = utcnow()
        key = generate_key(self.settings.signing_alg)
        with self._session() as session:
            session.execute(
                delete(model).where(
                    model.retired_at.is_not(None), model.retired_at < now - self.retention
                )
            )
            session.execute(update(model).where(model.retired_at.is_(None)).values(retired_at=now))
            # The new key is made when the old ones retire: one hands over to the other.
            self._insert(session, key, created_at=now)  # commits the retirements too
        self.refresh(wait=True)
        return str(key.kid)


def _newest(rows: list[Any]) -> Any | None:
    """The most recently made of ``rows`` (None if there are none)."""
    return max(rows, key=lambda r: (r.created_at, r.kid), default=None)
