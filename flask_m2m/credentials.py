"""Client ids and secrets: generation with :mod:`secrets`, keyed hashing, constant-time checks.

Client secrets are long random strings (64 base-62 characters, about 380 bits), so a fast
keyed hash is as strong as a slow password hash here: nobody can guess such a secret, and a
stolen database without the server-side key does not even allow an offline check.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

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
#: What a well-formed client id looks like; anything else is refused before a database query.
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
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


def hash_secret(secret: str, key: bytes) -> str:
    """The stored form of a client secret: HMAC-SHA-256 under the server-side ``key``."""
    digest = hmac.new(key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return HASH_SCHEME + digest


def verify_secret(secret: str, stored_hash: str | None, key: bytes) -> bool:
    """Whether ``secret`` matches ``stored_hash``, compared in constant time."""
    if len(secret) > MAX_SECRET_LENGTH:
        return False
    candidate = hash_secret(secret, key)
    return hmac.compare_digest(candidate, stored_hash or HASH_SCHEME)


def hash_token(token: str) -> str:
    """The stored form of an opaque access token (SHA-256; tokens are 256-bit random)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
