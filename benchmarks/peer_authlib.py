"""The peer: a minimal client-credentials server written as Authlib's documentation shows it.

Nothing of flask-m2m: Flask-SQLAlchemy models with Authlib's mixins (the client secret stored
in plain text, the client looked up with the ORM per request, as ``create_query_client_func``
does), ``AuthorizationServer`` with ``ClientCredentialsGrant``, and

- ``PEER_ALG=RS256`` or ``ES256``: RFC 9068 JWT access tokens from Authlib's
  ``JWTBearerTokenGenerator`` (the JWK set read from ``PEER_JWKS``), not stored (the RFC 9068
  page of the documentation: "the authorization server do not need to store access tokens"),
  and a ``ResourceProtector`` with ``JWTBearerTokenValidator`` on ``GET /api/items``;
- ``PEER_ALG=opaque``: Authlib's default random bearer tokens, stored with
  ``create_save_token_func``, and ``create_bearer_token_validator`` on ``GET /api/items``.

``PEER_DB`` is the SQLite file. :func:`prepare` creates the tables, the key and one client.

    gunicorn 'benchmarks.peer_authlib:create_app()'
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.integrations.sqla_oauth2 import (
    OAuth2ClientMixin,
    OAuth2TokenMixin,
    create_bearer_token_validator,
    create_query_client_func,
    create_save_token_func,
)
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator, JWTBearerTokenValidator
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from joserfc.jwk import ECKey, KeySet, RSAKey

ISSUER = "http://bench.test"
RESOURCE = "http://peer.test"

db = SQLAlchemy()


class Client(db.Model, OAuth2ClientMixin):  # type: ignore[name-defined,misc]
    __tablename__ = "oauth2_client"
    id = db.Column(db.Integer, primary_key=True)


class Token(db.Model, OAuth2TokenMixin):  # type: ignore[name-defined,misc]
    __tablename__ = "oauth2_token"
    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, nullable=True)


def _jwks() -> dict[str, Any]:
    with open(os.environ["PEER_JWKS"]) as file:
        return dict(json.load(file))


class MyJWTBearerTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """As the RFC 9068 page shows it: ``get_jwks`` returns the private keys (a joserfc
    ``KeySet`` imported once, as Authlib 1.7+ asks instead of a dict)."""

    jwks: KeySet

    def get_jwks(self) -> KeySet:
        return self.jwks

    def get_audiences(self, client: Any, user: Any, scope: Any) -> str:
        return RESOURCE


class MyJWTBearerTokenValidator(JWTBearerTokenValidator):  # type: ignore[misc]
    """As the RFC 9068 page shows it: ``get_jwks`` returns the public keys."""

    jwks: KeySet

    def get_jwks(self) -> KeySet:
        return self.jwks


def create_app() -> Flask:
    """The peer server, configured from ``PEER_ALG``, ``PEER_DB`` and ``PEER_JWKS``."""
    alg = os.environ.get("PEER_ALG", "RS256")
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.environ["PEER_DB"]
    db.init_app(app)

    if alg == "opaque":
        server = AuthorizationServer(
            app,
            query_client=create_query_client_func(db.session, Client),
            save_token=create_save_token_func(db.session, Token),
        )
        validator: Any = create_bearer_token_validator(db.session, Token)()
    else:
        server = AuthorizationServer(
            app,
            query_client=create_query_client_func(db.session, Client),
            save_token=lambda token, request: None,
        )
        jwks = _jwks()
        generator = MyJWTBearerTokenGenerator(issuer=ISSUER, alg=alg)
        generator.jwks = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        server.register_token_generator("default", generator)
        validator = MyJWTBearerTokenValidator(issuer=ISSUER, resource_server=RESOURCE)
        public = {"keys": [_public(key) for key in jwks["keys"]]}
        validator.jwks = KeySet.import_key_set(public)  # type: ignore[arg-type]
    server.register_grant(grants.ClientCredentialsGrant)
    require_oauth = ResourceProtector()
    require_oauth.register_token_validator(validator)

    @app.route("/oauth/token", methods=["POST"])
    def issue_token() -> Any:
        return server.create_token_response()

    @app.route("/api/items")
    @require_oauth("read")  # type: ignore[untyped-decorator]
    def items() -> dict[str, Any]:
        return {"items": []}

    @app.route("/bench/bare")
    def bare() -> dict[str, Any]:
        return {"ok": True}

    return app


def _public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}


def prepare(alg: str, database: str, jwks_path: str, secret: str) -> str:
    """Create the tables, the signing key (JWT peers) and one client; return its id."""
    os.environ.update(PEER_ALG=alg, PEER_DB=database, PEER_JWKS=jwks_path)
    if alg != "opaque":
        key = RSAKey.generate_key(2048) if alg == "RS256" else ECKey.generate_key("P-256")
        jwk = key.as_dict(private=True)
        jwk.update(kid="peer-1", alg=alg, use="sig")
        with open(jwks_path, "w") as file:
            json.dump({"keys": [jwk]}, file)
    app = create_app()
    with app.app_context():
        db.create_all()
        client = Client(
            client_id="peer-client", client_secret=secret, client_id_issued_at=int(time.time())
        )
        client.set_client_metadata(
            {
                "client_name": "bench",
                "grant_types": ["client_credentials"],
                "scope": "read write",
                "token_endpoint_auth_method": "client_secret_basic",
            }
        )
        db.session.add(client)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return "peer-client"
