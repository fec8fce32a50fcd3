"""Replay detection: each ``jti`` of a client assertion (RFC 7523 §3) or of a DPoP proof
(RFC 9449 §11.1) is accepted once, across every instance of the app.

:func:`replay_store` builds the store ``M2M_REPLAY_STORE`` names, kept on the app's state as
``state.replay``:

- ``"database"``: the ``m2m_used_jtis`` table (:class:`~flask_m2m.models.UsedJtiMixin`), written
  on a connection of its own (never the request's session) and committed at once;
- ``"storage"``: the rate-limit storage of ``RATELIMIT_STORAGE_URI`` (Redis, Memcached, ...),
  one atomic ``incr`` with an expiry per identifier;
- ``"memory"``: this process only (tests, a single process).

Unset, it is the database when the models have the table and the app a database, else the
storage when ``RATELIMIT_STORAGE_URI`` is set, else memory: a resource server without a
database can share its replay store through the same URI as its rate limits.

Entries expire with the assertion or proof they come from. Keys are SHA-256 digests of kind,
issuer and identifier, so no client-chosen string reaches a storage key or a column unhashed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from flask import Flask
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import MemoryStorage, Storage, storage_from_string

from .autocommit import Autocommit
from .config import KEYS, REPLAY_STORES
from .config_parsers import Source
from .errors import ConfigurationError

#: Flask-Limiter's keys (read by name: a resource server loads no Flask-Limiter).
STORAGE_URI, STORAGE_OPTIONS, KEY_PREFIX = (
    "RATELIMIT_STORAGE_URI",
    "RATELIMIT_STORAGE_OPTIONS",
    "RATELIMIT_KEY_PREFIX",
)
#: Seconds between two deletions of expired rows of the table by one process.
PRUNE_INTERVAL = 60.0
#: Shortest time an entry is kept, in seconds (an identifier whose assertion expires now is
#: still refused for the clock skew the checks tolerate).
MIN_KEEP_SECONDS = 60


def _digest(kind: str, issuer: str, jti: str) -> str:
    """The SHA-256 hex digest naming one identifier of one issuer, for one use."""
    return hashlib.sha256("\x00".join((kind, issuer, jti)).encode("utf-8")).hexdigest()


def _keep_for(expires_at: int, now: float) -> int:
    """Seconds an identifier expiring at ``expires_at`` must be remembered."""
    return max(int(expires_at - now) + 1, MIN_KEEP_SECONDS)


class ReplayStore:
    """Remembers identifiers until they expire; :meth:`first_use` is the only question.

    This base class keeps them in a ``limits`` storage (in memory unless given another).
    """

    #: What ``M2M_REPLAY_STORE`` calls this store.
    name = "memory"

    def __init__(self, storage: Storage | None = None, prefix: str = "m2m-jti"):
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.prefix = prefix

    def first_use(self, kind: str, issuer: str, jti: str, expires_at: int) -> bool:
        """True the first time ``jti`` of ``issuer`` is seen for ``kind`` (e.g.
        ``"client_assertion"``, ``"dpop"``), False on a replay, across every instance sharing
        the store; the identifier is remembered until ``expires_at`` (seconds since the epoch).

        :raises Exception: when the store cannot be reached (never True without a record).
        """
        key = f"{self.prefix}:{_digest(kind, issuer, jti)}"
        return self.storage.incr(key, _keep_for(expires_at, time.time())) == 1


class StorageReplayStore(ReplayStore):
    """Identifiers in the rate-limit storage (``RATELIMIT_STORAGE_URI``), shared by instances."""

    name = "storage"


class DatabaseReplayStore(ReplayStore):
    """Identifiers in the ``m2m_used_jtis`` table: a primary-key insert decides the first use."""

    name = "database"

    def __init__(self, db: Any, model: Any):
        self.db = db
        self.model = model
        #: The insert runs alone in autocommit mode: one round trip, no BEGIN nor COMMIT.
        self._autocommit = Autocommit(db)
        self._pruned_at = 0.0
        self._lock = threading.Lock()

    def first_use(self, kind: str, issuer: str, jti: str, expires_at: int) -> bool:
        now = time.time()
        key = _digest(kind, issuer, jti)
        keep_until = int(now) + _keep_for(expires_at, now)
        table = self.model.__table__
        engine = self.db.engine
        self._prune(engine, now)
        insert = table.insert().values(key=key, expires_at=keep_until)
        alone = self._autocommit()
        # A connection of its own, never the request's session; the primary key decides.
        if self._inserted(alone, insert):
            return True
        # The key is taken: a replay, unless that row expired and no prune removed it yet
        # (an identifier may be used again once its assertion or proof expired).
        with alone.begin() as connection:
            expired = table.delete().where(table.c.key == key, table.c.expires_at < now)
            if not connection.execute(expired).rowcount:
                return False
        return self._inserted(alone, insert)

    def _inserted(self, engine: Any, insert: Any) -> bool:
        """Run ``insert`` in a transaction of its own: False if the key is already there."""
        # The DB-API's own IntegrityError (PEP 249), which SQLAlchemy wraps.
        dbapi = getattr(engine.dialect, "loaded_dbapi", None) or engine.dialect.dbapi
        try:
            with engine.begin() as connection:
                connection.execute(insert)
        except Exception as exc:
            if isinstance(getattr(exc, "orig", None), dbapi.IntegrityError):
                return False
            raise
        return True

    def _prune(self, engine: Any, now: float) -> None:
        """Delete the expired rows, at most once per :data:`PRUNE_INTERVAL` per process."""
        with self._lock:
            if now - self._pruned_at < PRUNE_INTERVAL:
                return
            self._pruned_at = now
        table = self.model.__table__
        with engine.begin() as connection:
            connection.execute(table.delete().where(table.c.expires_at < int(now)))


def _storage(app: Flask) -> Storage:
    """The storage ``RATELIMIT_STORAGE_URI`` and ``RATELIMIT_STORAGE_OPTIONS`` name."""
    options = dict(app.config.get(STORAGE_OPTIONS) or {})
    options["wrap_exceptions"] = True
    try:
        storage = storage_from_string(app.config[STORAGE_URI], **options)
    except LimitsConfigurationError as exc:
        raise ConfigurationError(
            "M2M_REPLAY_STORE is 'storage' but RATELIMIT_STORAGE_URI names no storage the "
            f"limits library can use (or its driver is not installed): {exc}"
        ) from exc
    if not isinstance(storage, Storage):
        raise ConfigurationError("RATELIMIT_STORAGE_URI must name a synchronous storage.")
    return storage


def _configured(app: Flask, state: Any) -> str | None:
    """``M2M_REPLAY_STORE``: from the state's settings, else read from ``app.config``."""
    settings = getattr(state, "settings", None)
    if settings is not None and hasattr(settings, "replay_store"):
        return settings.replay_store  # type: ignore[no-any-return]
    key = next(key for key in KEYS if key.attribute == "replay_store")
    value: str | None = key.parse(Source(app, {}, {key.name: key.default}), key.name)
    return value


def replay_store(app: Flask, state: Any = None) -> ReplayStore:
    """The replay store of ``app``, as ``M2M_REPLAY_STORE`` names it (see the module).

    :param state: the app's :class:`~flask_m2m.state.M2MState`, or any object with ``db`` and
        ``models`` (or none: a resource server without a database).
    :raises ConfigurationError: for a store the app cannot have (no table, no storage URI).
    """
    wanted = _configured(app, state)
    db = getattr(state, "db", None)
    model = getattr(getattr(state, "models", None), "used_jti", None)
    has_uri = bool(app.config.get(STORAGE_URI))
    if wanted is None:
        wanted = "database" if db is not None and model is not None else None
        wanted = wanted or ("storage" if has_uri else "memory")
    if wanted == "database":
        if db is None or model is None:
            raise ConfigurationError(
                "M2M_REPLAY_STORE is 'database' but the models have no used-jti table "
                "(Models.used_jti) or the app no database."
            )
        return DatabaseReplayStore(db, model)
    if wanted == "storage":
        if not has_uri:
            raise ConfigurationError(
                "M2M_REPLAY_STORE is 'storage' but RATELIMIT_STORAGE_URI is not set."
            )
        prefix = f"{app.config.get(KEY_PREFIX) or 'm2m'}-jti"
        return StorageReplayStore(_storage(app), prefix)
    assert wanted in REPLAY_STORES
    return ReplayStore()
