"""The example app's files in its instance folder are readable by their owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.apps import close_app, register


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a file created without a mode is 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_instance_files_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fresh instance folder, the default SQLite database (and its -wal and -shm files,
    which SQLite creates with the database's mode), the secret key and the admin password hash
    that ``demo`` writes are all mode 0600."""
    from example import create_app, db

    monkeypatch.delenv("FLASK_SQLALCHEMY_DATABASE_URI", raising=False)
    instance = tmp_path / "instance"
    app = create_app({"TESTING": True}, instance_path=str(instance))
    try:
        assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'example.db'}"
        register(app)  # a write: the -wal and -shm files exist while the connection is open
        with app.app_context():
            with db.engine.connect():
                files = ["example.db", "example.db-wal", "example.db-shm"]
                assert {name: mode(instance / name) for name in files} == dict.fromkeys(
                    files, 0o600
                )
        result = app.test_cli_runner().invoke(args=["demo"])
        assert result.exit_code == 0, result.output
        assert mode(instance / "secret_key") == 0o600
        assert mode(instance / "admin_password_hash") == 0o600
    finally:
        close_app(app, db, drop_tables=True)
