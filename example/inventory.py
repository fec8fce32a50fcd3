"""Example resource server: an inventory service that trusts the example authorization server.

A separate Flask app with :class:`~flask_m2m.ResourceServer` and no database: it verifies the
example server's JWT access tokens offline against its JWK set. Run both::

    python3 dev.py example                      # the authorization server on :5000
    FLASK_M2M_ISSUER=http://127.0.0.1:5000 \\
        flask --app example.inventory run --port 5001

Configuration comes from ``FLASK_*`` environment variables: ``FLASK_M2M_ISSUER`` (the
authorization server's URL, default ``http://127.0.0.1:5000``) and ``FLASK_M2M_AUDIENCE``
(this service's identifier, default ``http://127.0.0.1:5001``), and any other key of the
resource server (``FLASK_M2M_INTROSPECTION_CLIENT_ID`` ...).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_m2m import ResourceServer, current_token, require_scope

#: The defaults: the example authorization server and this service on the next port.
DEFAULT_ISSUER = "http://127.0.0.1:5000"
DEFAULT_AUDIENCE = "http://127.0.0.1:5001"

#: What the inventory holds (an API needs something to protect).
ITEMS = [
    {"sku": "bolt-m6", "name": "Bolt M6", "quantity": 1200},
    {"sku": "nut-m6", "name": "Nut M6", "quantity": 950},
]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The inventory app factory (``gunicorn 'example.inventory:create_app()'`` works too)."""
    app = Flask(__name__)
    app.config["M2M_ISSUER"] = DEFAULT_ISSUER
    app.config["M2M_AUDIENCE"] = DEFAULT_AUDIENCE
    app.config.from_prefixed_env()
    app.config.update(config or {})
    ResourceServer(app)

    @app.get("/inventory/whoami")
    @require_scope()
    def whoami() -> dict[str, Any]:
        audience = list(current_token.audience)
        return {
            "client_id": current_token.client_id,
            "scopes": list(current_token.scopes),
            "aud": audience[0] if len(audience) == 1 else audience,
        }

    @app.get("/inventory/items")
    @require_scope("inventory:read")
    def items() -> dict[str, Any]:
        return {"items": ITEMS}

    return app
