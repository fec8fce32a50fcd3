"""The apps the benchmark serves under gunicorn.

``create_bare_app()`` is the **floor**: a plain Flask app, no extension, with a constant JSON
``GET /bench/bare`` (the floor of protected GETs) and ``POST /bench/token`` (the floor of the
token endpoint: it answers a token-shaped constant without reading the form).
``create_app()`` is the example app plus ``/bench/bare`` (the in-app floor: no flask-m2m code)
and ``/bench/plain`` and ``/bench/scoped``, the same view without and with
``require_scope("read")``. ``create_resource_app()`` is the example inventory
(:class:`~flask_m2m.ResourceServer`) with the same three routes.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from example import create_app as create_example_app
from example.inventory import create_app as create_inventory_app
from flask_m2m import require_scope

#: What the token floor answers: the shape of a token response, computed once.
CONSTANT_TOKEN = {
    "access_token": "x" * 600,
    "token_type": "Bearer",
    "expires_in": 3600,
    "scope": "read",
}


def _bare() -> dict[str, Any]:
    return {"ok": True}


def _token() -> dict[str, Any]:
    return CONSTANT_TOKEN


def _items() -> dict[str, Any]:
    return {"items": []}


def _add_bench_routes(app: Flask) -> Flask:
    app.add_url_rule("/bench/bare", "bench_bare", _bare)
    app.add_url_rule("/bench/plain", "bench_plain", _items)
    app.add_url_rule("/bench/scoped", "bench_scoped", require_scope("read")(_items))
    return app


def create_app() -> Flask:
    """The example app (configured from ``FLASK_*`` variables) with the benchmark routes."""
    return _add_bench_routes(create_example_app())


def create_resource_app() -> Flask:
    """The example inventory (a ``ResourceServer``, ``FLASK_*`` variables) with the routes."""
    return _add_bench_routes(create_inventory_app())


def create_bare_app() -> Flask:
    """A Flask app with no extension: the floor every ratio is taken to."""
    app = Flask(__name__)
    app.add_url_rule("/bench/bare", "bench_bare", _bare)
    app.add_url_rule("/bench/token", "bench_token", _token, methods=["POST"])
    return app
