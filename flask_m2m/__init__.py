"""flask-m2m: machine-to-machine OAuth 2.0 (client credentials) for Flask.

The names below are the public interface. They load lazily, so importing a submodule (the
worker-side :mod:`flask_m2m.client` above all) does not load the server's stack.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "M2M": "extension",
    "ResourceServer": "resource_server",
    "get_state": "state",
    "require_scope": "decorators",
    "current_token": "decorators",
    "AccessToken": "verification",
    "AppHoldsWriteLock": "writes",
    "M2MError": "errors",
    "ConfigurationError": "errors",
    "ClientNotFound": "errors",
    "InvalidClientData": "errors",
    "SecretConflict": "errors",
    "InvalidToken": "errors",
    "MissingToken": "errors",
    "InsufficientScope": "errors",
    "TokenRefused": "errors",
    "Models": "models",
    "ClientMixin": "models",
    "ClientSecretMixin": "models",
    "AuditEventMixin": "models",
    "OpaqueTokenMixin": "models",
    "RevokedTokenMixin": "models",
    "SigningKeyMixin": "models",
    "UsedJtiMixin": "models",
}
#: Public modules: the client-lifecycle service, its audit trail and the signals.
_MODULES = ("lifecycle", "audit", "signals")
#: Deprecated name -> (module, name); they warn, and go away in 0.3.
_DEPRECATED = {"M2MState": ("state", "M2MState")}

__all__ = [
    "M2M",
    "AccessToken",
    "AppHoldsWriteLock",
    "AuditEventMixin",
    "ClientMixin",
    "ClientNotFound",
    "ClientSecretMixin",
    "ConfigurationError",
    "InsufficientScope",
    "InvalidClientData",
    "InvalidToken",
    "M2MError",
    "MissingToken",
    "Models",
    "OpaqueTokenMixin",
    "ResourceServer",
    "RevokedTokenMixin",
    "SecretConflict",
    "SigningKeyMixin",
    "TokenRefused",
    "UsedJtiMixin",
    "audit",
    "current_token",
    "get_state",
    "lifecycle",
    "require_scope",
    "signals",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _DEPRECATED:
        module, attribute = _DEPRECATED[name]
        warnings.warn(
            f"flask_m2m.{name} is deprecated: use flask_m2m.{module}.{attribute}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from . import audit, lifecycle, signals
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
        TokenRefused,
    )
    from .extension import M2M
    from .models import (
        AuditEventMixin,
        ClientMixin,
        ClientSecretMixin,
        Models,
        OpaqueTokenMixin,
        RevokedTokenMixin,
        SigningKeyMixin,
        UsedJtiMixin,
    )
    from .resource_server import ResourceServer
    from .state import get_state
    from .verification import AccessToken
    from .writes import AppHoldsWriteLock
