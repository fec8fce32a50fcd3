"""The servers of the load benchmark: one gunicorn (2 sync workers) per configuration.

A :class:`Server` runs an app spec with ``FLASK_*`` variables (``M2M_*`` configuration),
:func:`prepare` creates a flask-m2m database (key, clients, bulk rows), :func:`prepare_peer` the
plain-Authlib peer's, and :func:`production_reachable` tells whether PostgreSQL and Redis
answer.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent

SECRET_KEY = "bench-secret-key-0123456789abcdef"
#: A loopback URL: a ResourceServer accepts a plain-http issuer only on loopback.
ISSUER = "http://localhost"
#: The audience of the benchmark resource server (the example inventory).
RS_AUDIENCE = "http://inventory.bench.test"
NEVER = "1000000000/minute"  # a rate limit no benchmark reaches
PEER_SECRET = "peer-secret-0123456789abcdef0123456789"
#: PostgreSQL and Redis of the production rows (``M2M_BENCH_DATABASE_URL``,
#: ``M2M_BENCH_REDIS_URL`` override them).
PG_URL = os.environ.get(
    "M2M_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/m2m_bench"
)
REDIS_URL = os.environ.get("M2M_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


@dataclass
class Server:
    """One gunicorn (2 sync workers) serving ``spec`` with ``config`` (``FLASK_*``) and
    ``environ`` (other variables)."""

    name: str
    spec: str = "benchmarks.app:create_app()"
    config: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)
    #: client ids and secrets, tokens, keys: filled in by the preparation and after start
    data: dict[str, str] = field(default_factory=dict)
    #: called just before the start (e.g. to point a resource server at its issuer)
    setup: Callable[[Server], None] | None = None
    #: plain-Authlib peer (not counted in the memory target)
    peer: bool = False
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
        env.update({f"FLASK_{key}": value for key, value in self.config.items()})
        env.update(self.environ)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start(self, log: Path) -> None:
        if self.setup is not None:
            self.setup(self)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        sock.set_inheritable(True)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "sync",
                 "-b", f"fd://{sock.fileno()}", "--chdir", str(ROOT),
                 "--log-level", "warning", self.spec],
                env=self.env(), pass_fds=(sock.fileno(),), stdout=out, stderr=out,
            )  # fmt: skip
        sock.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/bench/bare", timeout=2) as response:
                    if response.status == 200 and len(self.workers()) == 2:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn for {self.name} exited; see {log}")
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn for {self.name} did not start; see {log}")

    def workers(self) -> list[int]:
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def rss_mib(self) -> float:
        """Mean VmRSS of the workers, in MiB."""
        sizes = []
        for pid in self.workers():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return statistics.mean(sizes) if sizes else float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def m2m_config(database: str, alg: str = "RS256", **extra: str) -> dict[str, str]:
    """The example app's configuration: ``database`` (a SQLite path or a URL), ``alg``,
    limits that never trigger, ``memory://`` rate-limit storage unless ``extra`` sets one."""
    url = database if "://" in database else f"sqlite:///{database}"
    return {
        "SQLALCHEMY_DATABASE_URI": url,
        "SECRET_KEY": SECRET_KEY,
        "RATELIMIT_STORAGE_URI": "memory://",
        "M2M_ISSUER": ISSUER,
        "M2M_SIGNING_ALG": alg,
        "M2M_TOKEN_RATE_LIMIT": NEVER,
        "M2M_FAILED_AUTH_RATE_LIMIT": NEVER,
        "M2M_MANAGEMENT_RATE_LIMIT": NEVER,
        **extra,
    }


def _parsed(value: str) -> Any:
    """A ``FLASK_*`` value as Flask's ``from_prefixed_env`` reads it (JSON, else a string)."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def prepare(
    server: Server, clients: int = 10, revoked: int = 0, client_jwks: dict[str, Any] | None = None
) -> None:
    """Create the database: the signing key, the benchmark client (a secret, allowed the
    resource server's audience), the admin client, a key-only ``private_key_jwt`` client when
    ``client_jwks`` is given (with the service functions), and ``clients - 2`` more clients plus
    ``revoked`` revoked-token rows (bulk-inserted with SQLAlchemy core)."""
    from sqlalchemy import insert

    from example import create_app, db
    from flask_m2m import get_state
    from flask_m2m import lifecycle as service

    config = {key: _parsed(value) for key, value in server.config.items()}
    app = create_app(config)
    with app.app_context():
        state = get_state(app)
        state.keys.signing_key()
        bench, secret = service.create_client(
            state, actor="cli:bench", name="bench", scopes="read write", audiences=[RS_AUDIENCE]
        )
        admin, admin_secret = service.create_client(
            state, actor="cli:bench", name="admin", scopes="m2m:admin"
        )
        assert secret is not None and admin_secret is not None
        server.data.update(
            client_id=bench.client_id, secret=secret.plaintext,
            admin_id=admin.client_id, admin_secret=admin_secret.plaintext,
        )  # fmt: skip
        if client_jwks is not None:
            keyed, none = service.create_client(
                state, actor="cli:bench", name="keyed", scopes="read",
                token_endpoint_auth_method="private_key_jwt", jwks=client_jwks,
            )  # fmt: skip
            assert none is None
            server.data["keyed_id"] = keyed.client_id
        db.session.commit()
        models, now = state.models, int(time.time())
        tables: tuple[Any, ...] = (models.client, models.client_secret, models.revoked_token)
        for start in range(0, max(clients - 2, revoked), 10_000):
            stop = min(start + 10_000, clients - 2)
            if start < stop:
                db.session.execute(
                    insert(tables[0].__table__),
                    [{"client_id": f"bulk_{i:06d}", "name": f"bulk {i}", "scope": "read"}
                     for i in range(start, stop)],
                )  # fmt: skip
                db.session.execute(
                    insert(tables[1].__table__),
                    [{"id": f"sec_bulk{i:06d}", "client_id": f"bulk_{i:06d}",
                      "secret_hash": "hmac-sha256$" + os.urandom(32).hex()}
                     for i in range(start, stop)],
                )  # fmt: skip
            stop = min(start + 10_000, revoked)
            if start < stop:
                db.session.execute(
                    insert(tables[2].__table__),
                    [{"jti": f"bulk{i:06d}", "client_id": bench.client_id,
                      "expires_at": now + 86400} for i in range(start, stop)],
                )  # fmt: skip
            db.session.commit()
        db.session.remove()
        db.engine.dispose()


def prepare_peer(server: Server, alg: str, tmp: Path) -> None:
    """The plain-Authlib peer's SQLite database, key and client (in a subprocess: the peer's
    models would otherwise share this process's Flask-SQLAlchemy metadata)."""
    database, jwks = tmp / f"peer-{alg}.db", tmp / f"peer-{alg}.json"
    code = (
        "import sys; from benchmarks import peer_authlib as p; "
        "print(p.prepare(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, alg, str(database), str(jwks), PEER_SECRET],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    server.environ.update(PEER_ALG=alg, PEER_DB=str(database), PEER_JWKS=str(jwks))
    server.data.update(client_id=out.stdout.strip(), secret=PEER_SECRET)


def reset_schema(url: str, schema: str) -> str:
    """Drop and create ``schema`` in the PostgreSQL database of ``url``; return the URL whose
    connections use it (``search_path``)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def production_reachable() -> str | None:
    """None when PostgreSQL (``PG_URL``) and Redis (``REDIS_URL``) answer, else why not."""
    try:
        import psycopg  # noqa: F401
        import redis
        import sqlalchemy
    except ImportError as exc:
        return f"{exc.name} is not installed (the bench extra has it)"

    try:
        engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:  # any failure means: no production rows
        return f"PostgreSQL at {PG_URL} unreachable ({type(exc).__name__})"
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        return f"Redis at {REDIS_URL} unreachable ({type(exc).__name__})"
    return None


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def post_token(url: str, body: str, headers: dict[str, str]) -> dict[str, Any]:
    """The JSON answer of a token request (``url`` is the token endpoint)."""
    request = urllib.request.Request(url, data=body.encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.load(response))


def fetch_token(server: Server, client_id: str, secret: str, scope: str, extra: str = "") -> str:
    body = f"grant_type=client_credentials&scope={quote_plus(scope)}{extra}"
    headers = {"Authorization": basic(client_id, secret)}
    answer = post_token(server.url + "/m2m/token", body, headers)
    return str(answer["access_token"])
