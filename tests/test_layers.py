"""The package's shape: the worker-side helper stays light, renamed names keep working."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import flask_m2m

SERVER_STACK = ("flask_sqlalchemy", "flask_limiter", "sqlalchemy", "flask_m2m.extension")


def test_the_client_helper_loads_no_server_stack() -> None:
    """``import flask_m2m.client`` (a cron job's import) loads neither Flask-SQLAlchemy nor
    Flask-Limiter nor any server module."""
    code = (
        "import sys, flask_m2m.client; "
        f"print(sorted(m for m in {SERVER_STACK!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_facade_is_lazy_and_complete() -> None:
    """``import flask_m2m`` loads nothing; every name in ``__all__`` resolves."""
    code = "import sys, flask_m2m; print(sorted(m for m in sys.modules if m.startswith('flask')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['flask_m2m']"
    for name in flask_m2m.__all__:
        assert getattr(flask_m2m, name) is not None


def test_renamed_names_warn_and_still_work() -> None:
    """``flask_m2m.clients`` (now ``lifecycle``) and ``flask_m2m.M2MState`` (internal, now in
    ``flask_m2m.state``) keep working for one minor version, with a DeprecationWarning."""
    from flask_m2m import client_fields, clients, lifecycle, state

    with pytest.warns(DeprecationWarning, match="flask_m2m.lifecycle.create_client"):
        assert clients.create_client is lifecycle.create_client
    with pytest.warns(DeprecationWarning, match="flask_m2m.client_fields.normalize_scopes"):
        assert clients.normalize_scopes is client_fields.normalize_scopes
    with pytest.warns(DeprecationWarning, match="flask_m2m.state.M2MState"):
        assert flask_m2m.M2MState is state.M2MState
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert flask_m2m.lifecycle is lifecycle
