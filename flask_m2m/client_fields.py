"""What a client's fields may hold: each value the CLI, the management API or host code gives
for a client checked against the configured policy (:mod:`flask_m2m.policy` and ``M2M_*``
settings), and turned into the form it is stored in.

Every check raises :class:`~flask_m2m.errors.InvalidClientData` naming the field.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .credentials import MAX_SECRET_LENGTH, MIN_IMPORTED_SECRET_LENGTH
from .errors import InvalidClientData
from .models import utcnow
from .policy import (
    MAX_AUDIENCES,
    MAX_DAYS,
    MAX_LABEL_LENGTH,
    MAX_METADATA_DEPTH,
    MAX_NAME_LENGTH,
    MAX_RATE_LIMIT_LENGTH,
    MAX_SCOPES,
    RATE_LIMIT_MODES,
    SCOPE_TOKEN,
    parse_audience,
)
from .policy import parse_rate_limit as parse_limit_string

if TYPE_CHECKING:
    from .state import M2MState


def normalize_scopes(state: M2MState, scopes: str | list[str] | tuple[str, ...]) -> str:
    """Scopes as one space-separated string of valid (§3.3) and allowed scope tokens."""
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    if len(items) > MAX_SCOPES:
        raise InvalidClientData(f"At most {MAX_SCOPES} scopes.", field="scopes")
    for scope in items:
        if not isinstance(scope, str) or not SCOPE_TOKEN.fullmatch(scope):
            raise InvalidClientData(f"Invalid scope {scope!r}.", field="scopes")
    allowed = state.settings.allowed_scopes
    if allowed is not None:
        refused = [s for s in items if s not in allowed]
        if refused:
            raise InvalidClientData(f"Scopes not allowed: {' '.join(refused)}.", field="scopes")
    return " ".join(dict.fromkeys(items))


def normalize_audiences(audiences: Any) -> list[str]:
    """The audiences (RFC 8707 resource identifiers) a client may ask tokens for: a list of
    at most :data:`.policy.MAX_AUDIENCES` absolute URIs (:func:`.policy.parse_audience`)."""
    if audiences is None:
        return []
    if isinstance(audiences, str) or not isinstance(audiences, list | tuple):
        raise InvalidClientData("audiences must be a list of URIs.", field="audiences")
    if len(audiences) > MAX_AUDIENCES:
        raise InvalidClientData(f"At most {MAX_AUDIENCES} audiences.", field="audiences")
    try:
        return list(dict.fromkeys(parse_audience(item) for item in audiences))
    except ValueError as exc:
        raise InvalidClientData(f"Each audience must be {exc}.", field="audiences") from None


def check_name(state: M2MState, name: Any) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidClientData(
            f"The name must be printable text of at most {MAX_NAME_LENGTH} characters.",
            field="name",
        )
    if state.settings.require_client_name and not name.strip():
        raise InvalidClientData("A client name is required.", field="name")
    return name.strip()


def check_metadata(state: M2MState, metadata: Any) -> dict[str, Any]:
    if metadata is None or metadata == {}:
        return {}
    if not state.settings.allow_client_metadata:
        raise InvalidClientData("Client metadata is not allowed here.", field="metadata")
    if not isinstance(metadata, dict):
        raise InvalidClientData("metadata must be a JSON object.", field="metadata")
    if _nesting_exceeds(metadata, MAX_METADATA_DEPTH):
        raise InvalidClientData(
            f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep.", field="metadata"
        )
    try:
        size = len(json.dumps(metadata, allow_nan=False).encode())
    except (TypeError, ValueError):  # NaN and Infinity are not JSON
        raise InvalidClientData("metadata must be plain JSON.", field="metadata") from None
    if size > state.settings.max_metadata_bytes:
        raise InvalidClientData(
            f"metadata is larger than {state.settings.max_metadata_bytes} bytes.", field="metadata"
        )
    return metadata


def _nesting_exceeds(value: dict[str, Any], limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels deep in ``value`` (walked
    with a stack of its own, so that no depth, nor a cycle, can exhaust Python's)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list | tuple))
    return False


def _lifetime_limits(state: M2MState) -> tuple[int, int | None]:
    s = state.settings
    return s.client_lifetime_days_min or 1, s.client_lifetime_days_max or None


def expiry_from_days(state: M2MState, days: int | None) -> datetime | None:
    """The expiry of a new client asked to live ``days`` days (policy applied)."""
    if days is None:
        days = state.settings.client_lifetime_days_default
    low, high = _lifetime_limits(state)
    if days is None:
        if high is not None:
            raise InvalidClientData(
                f"Clients must expire within {high} days.", field="expires_in_days"
            )
        return None
    if isinstance(days, bool) or not isinstance(days, int) or days > MAX_DAYS:
        raise InvalidClientData("expires_in_days must be a whole number.", field="expires_in_days")
    if days < low or (high is not None and days > high):
        limit = f"from {low} to {high}" if high else f"at least {low}"
        raise InvalidClientData(f"expires_in_days must be {limit}.", field="expires_in_days")
    return utcnow() + timedelta(days=days)


def check_expires_at(state: M2MState, expires_at: datetime | None) -> datetime | None:
    high = _lifetime_limits(state)[1]
    if expires_at is not None:
        try:
            expires_at = expires_at.astimezone(UTC)
            if not 1970 <= expires_at.year <= 9000:
                raise OverflowError
        except OverflowError:
            raise InvalidClientData("expires_at is out of range.", field="expires_at") from None
    if expires_at is None:
        if high is not None:
            raise InvalidClientData(f"Clients must expire within {high} days.", field="expires_at")
        return None
    if high is not None and expires_at > utcnow() + timedelta(days=high):
        raise InvalidClientData(f"Clients must expire within {high} days.", field="expires_at")
    return expires_at


def parse_rate_limit(value: str | None) -> str | None:
    """A client's ``rate_limit``: None, or a limit string :func:`.policy.parse_rate_limit`
    accepts that fits its column."""
    if value is None:
        return None
    try:
        parse_limit_string(value, max_length=MAX_RATE_LIMIT_LENGTH)
    except ValueError as exc:
        raise InvalidClientData(f"rate_limit must be {exc}.", field="rate_limit") from None
    return value


def parse_rate_limit_mode(value: str | None) -> str | None:
    """``"enforce"``, ``"log-only"``, or None for the ``M2M_TOKEN_RATE_LIMIT_MODE`` default."""
    if value is not None and value not in RATE_LIMIT_MODES:
        raise InvalidClientData(
            "rate_limit_mode must be 'enforce' or 'log-only'.", field="rate_limit_mode"
        )
    return value


def check_token_lifetime(state: M2MState, seconds: int | None) -> int | None:
    if seconds is None:
        return None
    low = state.settings.access_token_expires_in_min
    high = state.settings.access_token_expires_in_max
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not low <= seconds <= high:
        raise InvalidClientData(
            f"access_token_expires_in must be from {low} to {high} seconds.",
            field="access_token_expires_in",
        )
    return seconds


def check_label(label: str | None, field: str) -> str | None:
    if label is not None and (len(label) > MAX_LABEL_LENGTH or not label.isprintable()):
        raise InvalidClientData(
            f"A label is printable text of at most {MAX_LABEL_LENGTH} characters.", field
        )
    return label


def check_imported_secret(secret: str) -> str:
    size_ok = MIN_IMPORTED_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH
    if not size_ok or not secret.isprintable():
        raise InvalidClientData(
            f"An imported secret must be {MIN_IMPORTED_SECRET_LENGTH} to {MAX_SECRET_LENGTH} "
            "printable characters.",
            field="secret",
        )
    return secret
