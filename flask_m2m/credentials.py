"""Client ids and secrets: generation with :mod:`secrets`, keyed hashing, constant-time checks.

Client secrets are long random strings (64 base-62 characters, about 380 bits), so a fast
keyed hash is as strong as a slow password hash here: nobody can guess such a secret, and a
stolen database without the server-side key does not even allow an offline check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Prefix of generated client ids.
CLIENT_ID_PREFIX = "m2m_"
#: Prefix of generated client secrets, so that leak scanners can recognise them.
SECRET_PREFIX = "m2ms_"
#: Prefix of opaque access tokens.
OPAQUE_TOKEN_PREFIX = "m2mat_"
#: Version tag of stored secret hashes.
HASH_SCHEME = "hmac-sha256$"

_ALPHABET = string.ascii_letters + string.digits
#: Shortest secret that may be imported.
MIN_IMPORTED_SECRET_LENGTH = 32
#: Longest secret accepted anywhere (longer input is refused without hashing it).
MAX_SECRET_LENGTH = 512


def derive_key(master: bytes, purpose: str) -> bytes:
    """Derive a 32-byte key for one ``purpose`` from the master secret (HKDF-SHA-256)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return hkdf.derive(master)


def _random_string(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_client_id() -> str:
    """A new client id: ``m2m_`` and 24 random base-62 characters."""
    return CLIENT_ID_PREFIX + _random_string(24)


def generate_secret_id() -> str:
    """An id for a stored secret (not itself secret): ``sec_`` and 16 base-62 characters."""
    return "sec_" + _random_string(16)


def generate_client_secret(length: int = 64) -> str:
    """A new client secret: ``m2ms_`` and ``length`` random base-62 characters."""
    return SECRET_PREFIX + _random_string(length)


def generate_opaque_token() -> str:
    """A new opaque access token (256 bits of randomness)."""
    return OPAQUE_TOKEN_PREFIX + secrets.token_urlsafe(32)


class SecretHasher:
    """Keyed hashing of client secrets under the master secret and, during a rotation of it,
    the older ones (``M2M_KEY_ENCRYPTION_SECRET_FALLBACKS``).

    A stored hash names the key it was made with (``hmac-sha256$<key id>$<hex>``), so a check
    computes one HMAC per key its candidate rows use: one, outside a rotation, whether the
    client exists or not. Hashes from before key ids (``hmac-sha256$<hex>``) are tried under
    every key.

    :param masters: the current master secret first, then the older ones.
    """

    def __init__(self, masters: Sequence[bytes]):
        keys = [derive_key(master, "flask-m2m client-secret hashing") for master in masters]
        #: key id -> key; the first is the current key.
        self.keys: dict[str, bytes] = {_key_id(key): key for key in keys}
        self.current_id = _key_id(keys[0])
        #: How every hash made with the current key starts.
        self.prefix = f"{HASH_SCHEME}{self.current_id}$"
        #: What an unknown client's secret is compared with, so that it costs the same work.
        self.dummy = self.hash(secrets.token_urlsafe(32))

    def hash(self, secret: str) -> str:
        """The stored form of ``secret``, under the current key."""
        return self.prefix + self.digest(self.current_id, secret)

    def digest(self, key_id: str, secret: str) -> str:
        """HMAC-SHA-256 of ``secret`` under the key ``key_id``, in hex."""
        data = secret.encode("utf-8", "surrogatepass")
        return hmac.new(self.keys[key_id], data, hashlib.sha256).hexdigest()

    def match(self, secret: str, stored_hashes: Sequence[str]) -> int | None:
        """The index of the stored hash that ``secret`` matches, or None.

        Every hash is compared (in constant time) and no comparison ends the loop early; an
        empty list is compared with a dummy hash, so an unknown client costs what a known one
        does. A secret longer than :data:`MAX_SECRET_LENGTH` matches nothing.
        """
        acceptable = bool(stored_hashes) and len(secret) <= MAX_SECRET_LENGTH
        secret = secret[:MAX_SECRET_LENGTH]
        digests: dict[str, str] = {}
        found = None
        for index, stored in enumerate(stored_hashes or [self.dummy]):
            for key_id, expected in self._parts(stored):
                if key_id not in digests:
                    digests[key_id] = self.digest(key_id, secret)
                if hmac.compare_digest(digests[key_id], expected) and acceptable:
                    found = index
        return found

    def is_current(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` was made with the current key."""
        return stored_hash.startswith(self.prefix)

    def _parts(self, stored: str) -> list[tuple[str, str]]:
        """The (key id, hex digest) pairs to compare ``stored`` with."""
        body = stored[len(HASH_SCHEME) :] if stored.startswith(HASH_SCHEME) else ""
        key_id, sep, digest = body.partition("$")
        if sep:
            return [(key_id, digest)] if key_id in self.keys else []
        return [(known, body) for known in self.keys]  # made before hashes named their key


def _key_id(key: bytes) -> str:
    """A short public fingerprint of a hashing key (it reveals nothing of the key)."""
    return hmac.new(key, b"flask-m2m key id", hashlib.sha256).hexdigest()[:8]


def hash_token(token: str) -> str:
    """The stored form of an opaque access token (SHA-256; tokens are 256-bit random)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
