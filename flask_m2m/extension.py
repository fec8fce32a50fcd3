"""The :class:`M2M` extension: wires flask-m2m's layers into an app in :meth:`M2M.init_app`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

from .binding import policy_for
from .config import load_settings
from .credentials import SecretHasher
from .endpoints import Introspection, Revocation, ServerProtector, create_blueprint
from .errors import ConfigurationError
from .invalidation import watch_client_changes
from .keys import KeyStore
from .metrics import Metrics
from .models import Models, default_models
from .protection import PROTECTOR_KEY
from .ratelimit import RateLimits
from .replay import replay_store
from .resource_metadata import WELL_KNOWN, add_metadata_route, is_absolute_uri, metadata_path
from .server import Server
from .state import EXTENSION_KEY as EXTENSION_KEY
from .state import M2MState as M2MState
from .state import get_state as get_state
from .tokens import TokenService

__all__ = ["M2M"]

#: A ``token_claims`` hook: ``(client, scope) -> claims to add`` (or None).
ClaimsHook = Callable[[Any, str], Mapping[str, Any] | None]


class M2M:
    """Flask extension: machine-to-machine OAuth 2.0 (client credentials) for an app.

    ``M2M(app, db)`` or, with an app factory, ``m2m = M2M()`` then ``m2m.init_app(app, db)``.

    :param app: the Flask app, or None to call :meth:`init_app` later.
    :param db: the app's Flask-SQLAlchemy object.
    :param models: model classes built on the ``models`` mixins, to use your own tables.
    :param options: ``M2M_*`` settings without the prefix, in lower case (e.g. ``issuer=``);
        they take precedence over ``app.config``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Flask | None = None,
        db: Any = None,
        *,
        models: Models | None = None,
        **options: Any,
    ) -> None:
        self.db = db
        self.models = models
        self.options = options
        #: Set by :meth:`management_authorizer`; None: an ``m2m:admin`` token is required.
        self.authorizer: Callable[[], Any] | None = None
        #: Set by :meth:`token_claims`: adds claims to tokens, or refuses them.
        self.claims_hook: ClaimsHook | None = None
        if app is not None:
            self.init_app(app, db)

    def init_app(self, app: Flask, db: Any = None) -> None:
        """Register the routes, CLI and state of flask-m2m on ``app``.

        :raises ConfigurationError: on a second call for the same app, without ``db``, or on
            an invalid ``M2M_*`` value.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError("flask-m2m is already initialised on this app.")
        if PROTECTOR_KEY in app.extensions:
            raise ConfigurationError(
                "This app is a ResourceServer already: the authorization server's app protects "
                "its routes with M2M alone."
            )
        db = db if db is not None else self.db
        if db is None:
            raise ConfigurationError("Pass the Flask-SQLAlchemy object: M2M(app, db).")
        settings = load_settings(app, self.options)
        models = self.models or default_models(db)
        keys = KeyStore(settings, models, db)
        state = M2MState(
            settings=settings,
            db=db,
            models=models,
            secrets=SecretHasher(settings.master_secrets),
            keys=keys,
            tokens=TokenService(settings, models, db, keys),
            extension=self,
        )
        state.replay = replay_store(app, state)
        state.dpop = policy_for(settings)
        state.server = Server(state, debug=app.debug or app.testing)
        state.server.register_endpoint(Revocation)
        state.server.register_endpoint(Introspection)
        app.extensions[EXTENSION_KEY] = state
        app.extensions[PROTECTOR_KEY] = ServerProtector(state)
        watch_client_changes(app, state)
        if settings.issuer is None and not (app.debug or app.testing):
            app.logger.warning(
                "flask-m2m: M2M_ISSUER is not set, so the issuer (iss, aud, metadata) is taken "
                "from the Host header of each request. Set M2M_ISSUER to the public URL of this "
                "server in production."
            )
        if settings.signing_keys is None and (
            settings.key_publication_delay < settings.key_refresh_seconds
        ):
            app.logger.warning(
                "flask-m2m: M2M_KEY_PUBLICATION_SECONDS is shorter than M2M_KEY_REFRESH_SECONDS: "
                "after a key rotation, an instance may sign with a key another instance does "
                "not publish yet."
            )
        if settings.metrics_enabled:
            state.metrics = Metrics(app, state)
        state.rate_limits = RateLimits(app, state)
        app.register_blueprint(create_blueprint(settings.url_prefix, state.rate_limits))
        # RFC 9728 metadata of the server's own protected routes (its audience).
        own = settings.audience or settings.issuer
        add_metadata_route(
            app,
            metadata_path(own) if own and is_absolute_uri(own) else WELL_KNOWN,
            lambda: (state.audience(), state.issuer()),
            settings.dpop_signing_algs,
        )
        if settings.management_enabled:
            from .management import create_management_blueprint
            from .management.views import caller_principal

            blueprint = create_management_blueprint(settings.url_prefix)
            state.rate_limits.protect_management(blueprint, caller_principal)
            app.register_blueprint(blueprint)
        if settings.enable_cli:
            from .cli import m2m_cli

            app.cli.add_command(m2m_cli)

    def management_authorizer(self, func: Callable[[], Any]) -> Callable[[], Any]:
        """Decorator: let ``func`` decide who may use the management API.

        ``func`` runs in the request and returns the acting principal (any string, written to
        the audit trail) to allow the call, or ``False``/``None`` to refuse it with 403; it
        may also ``abort(401)`` itself. Without one, a Bearer token with scope ``m2m:admin``
        is required.

        .. versionadded:: 0.1
        """
        self.authorizer = func
        return func

    def token_claims(self, func: ClaimsHook) -> ClaimsHook:
        """Decorator: let ``func(client, scope)`` shape the access tokens of a client.

        It runs on every token request once the client is authenticated, with the client
        row and the granted scope (space-separated), and returns claims to add to the
        token (a dict; None or ``{}`` for none), or raises
        :class:`~flask_m2m.errors.TokenRefused` to refuse the request with a 400 OAuth error.
        The registered claims (``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``nbf``, ``jti``,
        ``client_id``, ``scope``, ``cnf``) cannot be set. With ``M2M_REUSE_TOKENS`` a token is
        handed out again only while the hook returns the same claims for it. Claims go into
        JWT access tokens; opaque tokens do not store them.

        .. versionadded:: 0.2
        """
        self.claims_hook = func
        return func

    def state(self, app: Flask | None = None) -> M2MState:
        """The per-app state (default: the current app's)."""
        return get_state(app)
