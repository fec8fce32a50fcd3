"""Example app: a small API whose routes machine clients reach with flask-m2m tokens.

Run it with ``flask --app example run`` (or ``python3 dev.py example``). Configuration comes
from ``FLASK_*`` environment variables, e.g. ``FLASK_SQLALCHEMY_DATABASE_URI``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_m2m import M2M, current_token, require_scope


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
m2m = M2M()

#: The example's in-memory "items" store (an API needs something to protect).
ITEMS: list[dict[str, Any]] = []


def _secret_key(instance_path: str) -> str:
    """A random SECRET_KEY kept in the instance folder, so restarts keep keys and secrets valid."""
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The example app factory (``gunicorn 'example:create_app()'`` works too)."""
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(
        app.instance_path, "example.db"
    )
    app.config["RATELIMIT_STORAGE_URI"] = "memory://"
    app.config.from_prefixed_env()
    app.config.update(config or {})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(app.instance_path)

    db.init_app(app)
    m2m.init_app(app, db)
    with app.app_context():
        db.create_all()

    @app.get("/")
    def index() -> dict[str, Any]:
        base = request.url_root.rstrip("/")
        return {
            "name": "flask-m2m example",
            "token_endpoint": f"{base}/m2m/token",
            "metadata": f"{base}/.well-known/oauth-authorization-server",
            "routes": ["GET /api/whoami", "GET /api/items", "POST /api/items"],
        }

    @app.get("/api/whoami")
    @require_scope()
    def whoami() -> dict[str, Any]:
        return {"client_id": current_token.client_id, "scopes": list(current_token.scopes)}

    @app.get("/api/items")
    @require_scope("read")
    def list_items() -> dict[str, Any]:
        return {"items": ITEMS}

    @app.post("/api/items")
    @require_scope("write")
    def add_item() -> tuple[dict[str, Any], int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return {"error": "invalid_request", "error_description": 'Send {"name": "..."}.'}, 400
        item = {"id": len(ITEMS) + 1, "name": body["name"][:200], "by": current_token.client_id}
        ITEMS.append(item)
        return item, 201

    return app
