"""Where flask-m2m keeps what it holds for one app: :class:`M2MState` in ``app.extensions``.

A leaf module: every other layer finds the app's state here, so none of them imports the
extension (which imports them all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, request

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .binding import ProofPolicy
    from .config import Settings
    from .credentials import SecretHasher
    from .extension import M2M
    from .keys import KeyStore
    from .metrics import Metrics
    from .models import Models
    from .ratelimit import RateLimits
    from .replay import ReplayStore
    from .server import Server
    from .tokens import TokenService

#: The key of flask-m2m's state in ``app.extensions``.
EXTENSION_KEY = "m2m"


@dataclass(eq=False)
class M2MState:
    """Everything flask-m2m holds for one app: settings, models, keys, tokens, server.

    Built by :meth:`flask_m2m.M2M.init_app`; internal (its fields may change).
    """

    settings: Settings
    db: Any
    models: Models
    #: Hashes and checks client secrets under the master secret (and its fallbacks).
    secrets: SecretHasher
    keys: KeyStore
    tokens: TokenService
    #: The extension object that initialised the app.
    extension: M2M
    server: Server = field(init=False)
    rate_limits: RateLimits = field(init=False)
    #: Single use of ``jti`` values (DPoP proofs, client assertions), shared by instances.
    replay: ReplayStore = field(init=False)
    #: How DPoP proofs are judged (RFC 9449).
    dpop: ProofPolicy = field(init=False)
    #: Prometheus metrics, when ``M2M_METRICS_ENABLED``.
    metrics: Metrics | None = None

    def issuer(self) -> str:
        """``M2M_ISSUER``, or the URL root of the current request."""
        return self.settings.issuer or request.url_root.rstrip("/")

    def audience(self) -> str:
        """``M2M_AUDIENCE``, or the issuer."""
        return self.settings.audience or self.issuer()

    def management_authorizer(self) -> Callable[[], Any] | None:
        """The app's own management authorizer, if it registered one."""
        return self.extension.authorizer


def get_state(app: Flask | None = None) -> M2MState:
    """The :class:`M2MState` of ``app`` (default: the current app).

    :raises ConfigurationError: if the extension was not initialised on that app.
    """
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise ConfigurationError(
            "flask-m2m is not initialised on this app: call M2M(app, db) or m2m.init_app(app, db)."
        )
    return state  # type: ignore[no-any-return]
