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
)
from .extension import M2M, M2MState
from .models import ClientMixin, Models, OpaqueTokenMixin, RevokedTokenMixin, SigningKeyMixin
from .tokens import AccessToken

__version__ = "0.1.0"

__all__ = [
    "M2M",
    "AccessToken",
    "ClientMixin",
    "ClientNotFound",
    "ConfigurationError",
    "InsufficientScope",
    "InvalidClientData",
    "InvalidToken",
    "M2MError",
    "M2MState",
    "MissingToken",
    "Models",
    "OpaqueTokenMixin",
    "RevokedTokenMixin",
    "SigningKeyMixin",
    "current_token",
    "require_scope",
]
