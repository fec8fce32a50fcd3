"""Example app: a small API whose routes machine clients reach with flask-m2m tokens.

Run it with ``flask --app example run`` (or ``python3 dev.py example``). Configuration comes
from ``FLASK_*`` environment variables, e.g. ``FLASK_SQLALCHEMY_DATABASE_URI``. An admin console
(``example.console``, needs the ``example`` extra) is served at ``/console``.

Behind a reverse proxy that terminates TLS, set ``EXAMPLE_PROXY_FIX`` to the number of proxies
in front of the app (``FLASK_EXAMPLE_PROXY_FIX=1``): the app is then wrapped in werkzeug's
``ProxyFix`` trusting that many hops of ``X-Forwarded-For``, ``-Proto``, ``-Host`` and
``-Prefix``, so that it sees the client's address and ``https``. Only set it when such a proxy
is really in front: a client reaching the app directly could claim any of those values.
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_m2m import M2M, current_token, get_state, lifecycle, require_scope


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
m2m = M2M()

DEMO_NAME = "demo"
#: The demo client's scopes: the example API's, and the example inventory's.
DEMO_SCOPES = "read write inventory:read"
#: The example inventory service's audience (``example.inventory``), given to the demo client.
INVENTORY_AUDIENCE = "http://127.0.0.1:5001"
READ_TOKEN = """python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'"""

#: The example's in-memory "items" store (an API needs something to protect).
ITEMS: list[dict[str, Any]] = []


def private_file(path: Path) -> Path:
    """Create ``path`` (if missing) readable and writable by its owner only, before anything
    is written to it: created with another mode and narrowed afterwards, its content could be
    read in between, or through a descriptor opened then."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # also when the umask took bits off 0600
    return path


def _secret_key(instance_path: str) -> str:
    """A random SECRET_KEY kept in the instance folder, so restarts keep keys and secrets valid."""
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        private_file(path).write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def create_app(config: dict[str, Any] | None = None, *, instance_path: str | None = None) -> Flask:
    """The example app factory (``gunicorn 'example:create_app()'`` works too).

    :param instance_path: the instance folder (default: ``instance/`` next to the package).
    """
    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(
        app.instance_path, "example.db"
    )
    app.config["RATELIMIT_STORAGE_URI"] = "memory://"
    # The console's session cookie: 8 hours (Flask's default is 31 days); the app may override.
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=8)
    app.config.from_prefixed_env()
    app.config.update(config or {})
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # Check pooled connections of a database server before use, so service resumes by
        # itself after it restarts (a SQLite file has no server: no ping, no round trip).
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(app.instance_path)
    hops = int(app.config.get("EXAMPLE_PROXY_FIX", 0))
    if hops:  # see the module docstring
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops
        )

    db.init_app(app)
    _private_sqlite_file(app)
    m2m.init_app(app, db)
    _tune_sqlite(app)

    from .console import init_console  # also declares the console's table

    init_console(app)
    _create_tables(app)

    @app.get("/")
    def index() -> dict[str, Any]:
        base = request.url_root.rstrip("/")
        return {
            "name": "flask-m2m example",
            "token_endpoint": f"{base}/m2m/token",
            "metadata": f"{base}/.well-known/oauth-authorization-server",
            "routes": ["GET /api/whoami", "GET /api/items", "POST /api/items"],
            "console": f"{base}/console/",
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

    @app.cli.command("demo")
    def demo() -> None:
        """Create (or give a new secret to) the client "demo" and print how to get a token;
        print how to log in to the console (with a new random password unless one is set)."""
        _print_demo_client(app)
        _print_console_login(app)

    return app


def _private_sqlite_file(app: Flask) -> None:
    """Create a SQLite database file mode 0600 before SQLAlchemy opens it (SQLite would make
    it 0644, readable by every local user); SQLite gives its -wal and -shm files the mode of
    the database file. An existing file keeps its mode."""
    with app.app_context():
        url = db.engine.url  # a relative SQLite path made absolute by Flask-SQLAlchemy
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    if url.query.get("uri") or url.database.startswith("file:"):
        return  # a SQLite URI filename: its options (such as mode=memory) are SQLite's
    path = Path(url.database)
    if not path.exists() and path.parent.is_dir():
        private_file(path)


def _tune_sqlite(app: Flask) -> None:
    """On a SQLite file, write-ahead logging: readers no longer wait for writers and a commit
    (an opaque token, a ``last_used_at``) needs no fsync of the whole database."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        return
    with app.app_context():

        @event.listens_for(db.engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()


def _create_tables(app: Flask) -> None:
    """Create the missing tables. Workers starting together race to do it: the losers see the
    "already exists" error and try again, finding the tables there."""
    with app.app_context():
        for _ in range(3):
            try:
                db.create_all()
                return
            except (IntegrityError, OperationalError, ProgrammingError):
                db.session.rollback()
                time.sleep(0.2)
        db.create_all()


def _base_url() -> str:
    """Where ``flask run`` serves the app (its host and port variables, or the defaults)."""
    host = os.environ.get("FLASK_RUN_HOST", "127.0.0.1")
    return f"http://{host}:{os.environ.get('FLASK_RUN_PORT', '5000')}"


def _print_demo_client(app: Flask) -> None:
    state = get_state(app)
    existing = [
        c for c in lifecycle.list_clients(state, name_prefix=DEMO_NAME).items if c.name == DEMO_NAME
    ]
    if existing:
        client, issued = lifecycle.rotate_secret(state, existing[0].client_id, actor="cli:demo")
        missing = {
            "scopes": sorted({*client.scopes, *DEMO_SCOPES.split()}),
            "audiences": list(dict.fromkeys([*(client.audiences or []), INVENTORY_AUDIENCE])),
        }
        client = lifecycle.update_client(state, client.client_id, missing, actor="cli:demo")
    else:
        client, issued = lifecycle.create_client(
            state,
            actor="cli:demo",
            name=DEMO_NAME,
            scopes=DEMO_SCOPES,
            audiences=[INVENTORY_AUDIENCE],
        )
    db.session.commit()  # the caller commits what the lifecycle functions add
    secret = issued.plaintext
    base = _base_url()
    print(
        f"""
Demo client (scopes: {client.scope}); its secret is shown only now:
  client_id:     {client.client_id}
  client_secret: {secret}

Get a token and call the API (in another terminal, once the server below is up):
  TOKEN=$(curl -s -u '{client.client_id}:{secret}' -d grant_type=client_credentials \\
          {base}/m2m/token | {READ_TOKEN})
  curl -s -H "Authorization: Bearer $TOKEN" {base}/api/whoami
  curl -s -H "Authorization: Bearer $TOKEN" {base}/api/items

It may also ask tokens for the example inventory service (audience {INVENTORY_AUDIENCE}):
  FLASK_M2M_ISSUER={base} flask --app example.inventory run --port 5001
  M2M_ISSUER={base} M2M_CLIENT_ID={client.client_id} M2M_CLIENT_SECRET='{secret}' \\
      python -m example.worker --resource {INVENTORY_AUDIENCE}
""",
        flush=True,
    )


def _print_console_login(app: Flask) -> None:
    from .console import admin_username, new_admin_password

    base = _base_url()
    if app.config.get("EXAMPLE_ADMIN_PASSWORD_HASH"):
        password = "the one whose hash EXAMPLE_ADMIN_PASSWORD_HASH holds"
        note = ""
    else:
        password = new_admin_password(app)
        note = "\n  (a new password on every run of this command; only its hash is kept)"
    print(
        f"""Admin console: {base}/console/
  username: {admin_username(app)}
  password: {password}{note}
""",
        flush=True,
    )
