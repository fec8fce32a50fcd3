"""The rules several layers check, each written once: scope syntax, client authentication
methods, rate-limit strings, and the length and range limits of client fields.

The management API's schemas, the client life cycle (and so the CLI and the example console),
the configuration checks and the models' column widths all read these names; this module
imports nothing of flask-m2m, so every layer may use it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from limits import RateLimitItem

#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
#: What a well-formed client id looks like; anything else is refused before a database query.
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: The client authentication methods of the token, revocation and introspection endpoints.
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
#: The ``token_endpoint_auth_method`` values a client may be registered with (a secret client
#: may also use ``client_secret_post``).
CLIENT_AUTH_METHODS = ("client_secret_basic", "private_key_jwt")
#: The methods of a client with secrets, and of a client with keys.
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
KEY_METHODS = ("private_key_jwt",)
#: JWS algorithms a client assertion may use (``Ed25519`` is the fully specified EdDSA name).
ASSERTION_ALGS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "Ed25519")
#: What a client's token-endpoint limit does: refuse (429), or only count and report.
RATE_LIMIT_MODES = ("enforce", "log-only")

# -- limits of client fields --------------------------------------------------------------------
#: Longest client name (the width of its column).
MAX_NAME_LENGTH = 200
#: Longest label of a client secret (the width of its column).
MAX_LABEL_LENGTH = 100
#: Most scopes one client may be given.
MAX_SCOPES = 100
#: Longest span in days anything may be set to (client lifetimes, audit retention): 100 years,
#: beyond which date arithmetic overflows.
MAX_DAYS = 36500
#: Deepest nesting of client metadata: the object itself is level 1, each object or array in
#: it one more. Far deeper values would overflow the stack of a JSON encoder (the database
#: driver's among them) before any size limit is reached.
MAX_METADATA_DEPTH = 32
#: Longest client ``rate_limit`` string (the width of its column).
MAX_RATE_LIMIT_LENGTH = 64
#: Longest window of a rate limit, in seconds: the ``limits`` parser's year (360 days). A
#: storage such as Redis cannot expire a counter thousands of years on.
MAX_RATE_LIMIT_WINDOW = 360 * 86400
#: Most keys in a client's JWK Set, and its largest size in bytes of JSON.
MAX_CLIENT_KEYS = 10
MAX_JWKS_BYTES = 20000
#: Longest ``jwks_uri`` (the width of its column) and longest ``kid``.
MAX_JWKS_URI_LENGTH = 2048
MAX_KID_LENGTH = 200
#: Smallest RSA modulus of a client key, in bits.
MIN_RSA_BITS = 2048
#: Most audiences (RFC 8707 resource identifiers) one client may be given.
MAX_AUDIENCES = 20
#: Longest audience. An opaque token stores the audiences of one request space-joined in a
#: column of :data:`MAX_STORED_AUDIENCE_LENGTH` characters.
MAX_AUDIENCE_LENGTH = 255
#: Width of the opaque-token ``audience`` column (audiences space-joined).
MAX_STORED_AUDIENCE_LENGTH = 512
#: Rows per page of a list, by default and at most.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

#: What :func:`parse_rate_limit` accepts, as its error messages say it.
RATE_LIMIT_RULE = "a limit string such as '100/minute', over a year at most"


def parse_rate_limit(
    value: object,
    *,
    max_length: int | None = None,
    max_window: int | None = MAX_RATE_LIMIT_WINDOW,
) -> list[RateLimitItem]:
    """Parse a Flask-Limiter limit string (``"10/second;1000/day"``) with the ``limits``
    parser, refusing windows longer than :data:`MAX_RATE_LIMIT_WINDOW`.

    :param max_length: the longest string accepted, if any.
    :param max_window: the longest window accepted, in seconds; None to read a stored value
        that may predate the rule (a client row written by version 0.1.0).
    :raises ValueError: whose message is :data:`RATE_LIMIT_RULE`.
    """
    from limits import parse_many

    try:
        if not isinstance(value, str) or (max_length is not None and len(value) > max_length):
            raise ValueError(value)
        items = parse_many(value)
        too_long = max_window is not None and any(i.get_expiry() > max_window for i in items)
        if not items or too_long:
            raise ValueError(value)
    except ValueError:
        raise ValueError(RATE_LIMIT_RULE) from None
    return items


#: What :func:`parse_audience` accepts, as its error messages say it.
AUDIENCE_RULE = (
    f"an absolute URI without fragment or whitespace, of at most {MAX_AUDIENCE_LENGTH} characters"
)


def parse_audience(value: object) -> str:
    """An audience (RFC 8707 §2 resource identifier): an absolute URI with a host, no
    fragment, no whitespace or control character, at most :data:`MAX_AUDIENCE_LENGTH` long.

    :raises ValueError: whose message is :data:`AUDIENCE_RULE`.
    """
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_AUDIENCE_LENGTH
        or not value.isprintable()
        or any(c.isspace() for c in value)
        or "#" in value
    ):
        raise ValueError(AUDIENCE_RULE)
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError(AUDIENCE_RULE) from None
    if not parts.scheme or not parts.netloc:
        raise ValueError(AUDIENCE_RULE)
    return value


#: Claims of every access token that a ``token_claims`` hook may not set; the others it adds
#: are the token's extra claims (in the JWT, and in introspection answers of either format).
RESERVED_CLAIMS = frozenset(
    ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "cnf")
)
