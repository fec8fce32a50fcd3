"""flask-m2m: machine-to-machine OAuth 2.0 (client credentials) for Flask."""

from __future__ import annotations

from .decorators import current_token, require_scope
from .errors import (
    ClientNotFound,
    ConfigurationError,
    InsufficientScope,
    InvalidClientData,
    InvalidToken,
    M2MError,
    MissingToken,
    SecretConflict,
)
from .extension import M2M, M2MState
from .models import (
    AuditEventMixin,
    ClientMixin,
    ClientSecretMixin,
    Models,
    OpaqueTokenMixin,
    RevokedTokenMixin,
    SigningKeyMixin,
)
from .tokens import AccessToken

__version__ = "0.1.0"

__all__ = [
    "M2M",
    "AccessToken",
    "AuditEventMixin",
    "ClientMixin",
    "ClientSecretMixin",
    "ClientNotFound",
    "ConfigurationError",
    "InsufficientScope",
    "InvalidClientData",
    "InvalidToken",
    "M2MError",
    "M2MState",
    "MissingToken",
    "SecretConflict",
    "Models",
    "OpaqueTokenMixin",
    "RevokedTokenMixin",
    "SigningKeyMixin",
    "current_token",
    "require_scope",
]
