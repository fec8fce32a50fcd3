"""What ``require_scope`` asks of the extension that guards an app's routes.

:class:`~flask_m2m.M2M` (the authorization server's own routes) and
:class:`~flask_m2m.ResourceServer` (a service elsewhere) each register a :class:`Protector` in
``app.extensions[PROTECTOR_KEY]``; :mod:`flask_m2m.decorators` finds it there and so depends on
neither extension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from flask import Flask, current_app

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .binding import ProofPolicy, Replay
    from .verification import AccessToken

#: The key of the app's protector in ``app.extensions``.
PROTECTOR_KEY = "m2m.protector"


class Protector(Protocol):
    """Verifies the access tokens sent to one app's protected routes."""

    @property
    def observe(self) -> Callable[[float, str], None] | None:
        """Records the duration and outcome of one check (Prometheus), or None."""
        ...

    @property
    def dpop(self) -> ProofPolicy | None:
        """How DPoP proofs are judged (RFC 9449), or None when only Bearer is accepted."""
        ...

    @property
    def replay(self) -> Replay:
        """Where the ``jti`` of DPoP proofs are remembered."""
        ...

    def authenticate(self, token_string: str) -> AccessToken:
        """The verified token (issuer, audience, lifetime, and whatever else this protector
        checks).

        :raises ~flask_m2m.verification.TokenRejected: 401 ``invalid_token``.
        :raises ~flask_m2m.errors.JSONHTTPError: any other refusal, such as a 503.
        """
        ...

    def resource_metadata_url(self) -> str:
        """The URL of this resource's RFC 9728 metadata, for the Bearer challenges."""
        ...


def get_protector(app: Flask | None = None) -> Protector:
    """The protector of ``app`` (default: the current app).

    :raises ConfigurationError: if neither ``M2M`` nor ``ResourceServer`` is set up on it.
    """
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    protector = app.extensions.get(PROTECTOR_KEY)
    if protector is None:
        raise ConfigurationError(
            "flask-m2m is not initialised on this app: call M2M(app, db) or m2m.init_app(app, "
            "db) on the authorization server, ResourceServer(app) or rs.init_app(app) on a "
            "service that trusts one."
        )
    return protector  # type: ignore[no-any-return]
