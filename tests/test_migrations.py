"""The shipped Alembic revisions: ``flask db upgrade heads`` on an empty database gives exactly
the models' schema, flask-m2m works on it, downgrade removes it, and the app's own autogenerate
leaves the m2m tables alone. SQLite always; PostgreSQL too when ``M2M_TEST_DATABASE_URL`` is set
(each test on a fresh database of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers.apps import DATABASE_URL, bare_app, close_app, fetch_token, register
from helpers.http import bearer

import flask_m2m.migrations
from flask_m2m import M2M, current_token, require_scope
from flask_m2m.models import UTCDateTime

M2M_TABLES = {
    "m2m_clients",
    "m2m_client_secrets",
    "m2m_audit_events",
    "m2m_signing_keys",
    "m2m_revoked_tokens",
    "m2m_opaque_tokens",
    "m2m_used_jtis",
}
#: What compare_metadata checks besides tables, columns, indexes and constraints.
COMPARE_OPTS: dict[str, Any] = {"compare_type": True, "compare_server_default": True}
ADVICE = "the m2m models differ from the shipped revisions; add a migration: see docs/migrations.md"

#: The app the CLI runs: example-like, with one model of its own. Its alembic.ini is edited
#: the way docs/migrations.md says.
APP_MODULE = '''
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_m2m import M2M
from flask_m2m.migrations import render_item


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Item(db.Model):
    __tablename__ = "items"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(100), nullable=False)


app = Flask(__name__)
app.config.update(
    SQLALCHEMY_DATABASE_URI=os.environ["APP_DATABASE_URL"],
    SECRET_KEY="migrations-test-secret-key-0123456789",
    RATELIMIT_STORAGE_URI="memory://",
)
db.init_app(app)
M2M(app, db)
Migrate(app, db, render_item=render_item)
'''
#: Warnings fail the CLI runs too, except two that are not flask-m2m's: Flask-Migrate's env.py
#: calls Flask-SQLAlchemy's deprecated ``get_engine()``, and the CLI process exits with its
#: pooled PostgreSQL connection still open.
WARNINGS = "error,ignore:'get_engine' is deprecated:DeprecationWarning,ignore::ResourceWarning"
#: The two lines docs/migrations.md adds under ``[alembic]`` in migrations/alembic.ini.
INI_LINES = (
    "path_separator = ;\n"
    "version_locations = %(here)s/versions;flask_m2m.migrations:versions\n"
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a new PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    if not DATABASE_URL.startswith("postgresql"):
        pytest.skip("M2M_TEST_DATABASE_URL is not a PostgreSQL URL")
    server = sa.make_url(DATABASE_URL)
    name = f"{server.database}_mig_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def m2m_app(database_url: str) -> tuple[Flask, SQLAlchemy]:
    """An in-process app on ``database_url`` with flask-m2m's default models only."""
    app, db = bare_app(database_url)
    M2M(app, db)

    @app.get("/api/whoami")
    @require_scope()
    def whoami() -> dict[str, Any]:
        return {"client_id": current_token.client_id}

    return app, db


def schema_differences(app: Flask, db: SQLAlchemy) -> list[Any]:
    """What autogenerate would change to make the database match the models."""
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=COMPARE_OPTS)
        return list(compare_metadata(context, db.metadata))


def table_names(app: Flask, db: SQLAlchemy) -> set[str]:
    with app.app_context():
        return set(sa.inspect(db.engine).get_table_names())


def dispose(app: Flask, db: SQLAlchemy) -> None:
    close_app(app, db)


@dataclass
class Project:
    """A tmp project directory holding ``app.py``, run through the real ``flask db`` CLI."""

    path: Path
    database_url: str

    def flask(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``flask --app app ARGS`` in the project; fails the test on a non-zero exit."""
        env = {**os.environ, "APP_DATABASE_URL": self.database_url, "PYTHONWARNINGS": WARNINGS}
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"flask {' '.join(args)}:\n{result.stdout}{result.stderr}"
        assert "Warning" not in result.stderr, result.stderr
        return result

    def app_revisions(self) -> list[Path]:
        return sorted((self.path / "migrations" / "versions").glob("*.py"))


def shipped_revisions() -> list[str]:
    return sorted(p.name for p in flask_m2m.migrations.VERSIONS_DIR.iterdir())


@pytest.fixture
def project(tmp_path: Path, empty_database: str) -> Iterator[Project]:
    """The documented set-up, on an empty database: ``flask db init``, the two alembic.ini
    lines, the app's own (empty) branch ``app``, then ``flask db upgrade heads``."""
    before = shipped_revisions()
    (tmp_path / "app.py").write_text(APP_MODULE)
    project = Project(tmp_path, empty_database)
    project.flask("db", "init")
    ini = tmp_path / "migrations" / "alembic.ini"
    ini.write_text(ini.read_text().replace("[alembic]\n", "[alembic]\n" + INI_LINES, 1))
    project.flask(
        "db", "revision", "-m", "app", "--head", "base", "--branch-label", "app",
        "--version-path", "migrations/versions",
    )  # fmt: skip
    project.flask("db", "upgrade", "heads")
    yield project
    assert shipped_revisions() == before, "a revision was written into the package"


@pytest.mark.slow
def test_upgrade_gives_the_models_schema_and_flask_m2m_works(project: Project) -> None:
    heads = project.flask("db", "heads").stdout
    assert "m2m_0003 (flask_m2m) (head)" in heads
    assert "(app) (head)" in heads
    app, db = m2m_app(project.database_url)
    try:
        assert table_names(app, db) == M2M_TABLES | {"alembic_version"}
        assert schema_differences(app, db) == [], ADVICE
        credentials = register(app, scopes="read")
        client = app.test_client()
        token = fetch_token(client, credentials, "read")
        response = client.get("/api/whoami", headers=bearer(token))
        assert response.status_code == 200
        assert response.get_json() == {"client_id": credentials["client_id"]}
    finally:
        dispose(app, db)


@pytest.mark.slow
def test_downgrade_removes_the_tables(project: Project) -> None:
    app, db = m2m_app(project.database_url)
    try:
        project.flask("db", "downgrade", "flask_m2m@base")
        assert table_names(app, db) == {"alembic_version"}
        project.flask("db", "upgrade", "heads")
        assert table_names(app, db) == M2M_TABLES | {"alembic_version"}
        project.flask("db", "downgrade", "base")
        assert table_names(app, db) == {"alembic_version"}
        with app.app_context(), db.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_heads() == ()
    finally:
        dispose(app, db)


@pytest.mark.slow
def test_app_autogenerate_leaves_the_m2m_tables_alone(project: Project) -> None:
    own_before = project.app_revisions()
    # Without --head, Alembic refuses (two heads) rather than writing into the package.
    env = {**os.environ, "APP_DATABASE_URL": project.database_url}
    refused = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "migrate", "-m", "oops"],
        cwd=project.path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "Multiple heads are present" in refused.stderr
    assert project.app_revisions() == own_before

    project.flask("db", "migrate", "-m", "items", "--head", "app@head")
    [new] = sorted(set(project.app_revisions()) - set(own_before))
    script = new.read_text()
    assert "op.create_table('items'" in script
    assert "m2m_" not in script
    project.flask("db", "upgrade", "heads")
    # Nothing left to do: a second autogenerate writes no revision.
    result = project.flask("db", "migrate", "-m", "nothing", "--head", "app@head")
    assert "No changes in schema detected." in result.stderr
    assert len(project.app_revisions()) == len(own_before) + 1


def upgrade_with_alembic(app: Flask, db: SQLAlchemy, script_location: Path) -> None:
    """``upgrade heads`` through Alembic's API, with the shipped versions as the one location."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("path_separator", ";")
    config.set_main_option("version_locations", flask_m2m.migrations.VERSION_LOCATION)
    script = ScriptDirectory.from_config(config)
    with app.app_context(), db.engine.begin() as conn:
        with EnvironmentContext(
            config, script, fn=lambda rev, _: script._upgrade_revs("heads", rev)
        ) as env:
            env.configure(connection=conn, target_metadata=db.metadata, **COMPARE_OPTS)
            env.run_migrations()


def test_models_match_the_shipped_migrations(empty_database: str, tmp_path: Path) -> None:
    """Fails when a model changed without a new revision in flask_m2m/migrations/versions."""
    app, db = m2m_app(empty_database)
    try:
        upgrade_with_alembic(app, db, tmp_path)
        differences = schema_differences(app, db)
        assert differences == [], f"{ADVICE}\n{differences}"
    finally:
        dispose(app, db)


def test_render_item_writes_utc_datetime_as_its_storage_type() -> None:
    metadata = sa.MetaData()
    sa.Table("events", metadata, sa.Column("at", UTCDateTime, nullable=False))
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        migration = produce_migrations(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert migration.upgrade_ops is not None
    code = render_python_code(
        migration.upgrade_ops, render_item=flask_m2m.migrations.render_item
    )
    assert "sa.Column('at', sa.DateTime(timezone=True), nullable=False)" in code
    assert "UTCDateTime" not in code
