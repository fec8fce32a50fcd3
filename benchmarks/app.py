"""The apps the benchmark serves under gunicorn.

``create_app()`` is the example app plus three routes: ``/bench/bare`` (the floor: no
flask-m2m code at all), and ``/bench/plain`` and ``/bench/scoped``, the same view without and
with ``require_scope("read")``. ``create_bare_app()`` is a plain Flask app with only
``/bench/bare``: the reference for the workers' memory.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from example import create_app as create_example_app
from flask_m2m import require_scope


def _bare() -> dict[str, Any]:
    return {"ok": True}


def _items() -> dict[str, Any]:
    return {"items": []}


def create_app() -> Flask:
    """The example app (configured from ``FLASK_*`` variables) with the benchmark routes."""
    app = create_example_app()
    app.add_url_rule("/bench/bare", "bench_bare", _bare)
    app.add_url_rule("/bench/plain", "bench_plain", _items)
    app.add_url_rule("/bench/scoped", "bench_scoped", require_scope("read")(_items))
    return app


def create_bare_app() -> Flask:
    """A Flask app with one route and no extension."""
    app = Flask(__name__)
    app.add_url_rule("/bench/bare", "bench_bare", _bare)
    return app
