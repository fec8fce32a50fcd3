"""An app's database engine in autocommit mode, for work of one statement: the database sees
the statement alone, with no ``BEGIN`` before it nor ``COMMIT`` after it (one round trip
instead of three on PostgreSQL).

This module imports no SQLAlchemy, so that modules a resource server loads can hold one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class Autocommit:
    """The engine of an app's ``db`` in autocommit mode, made once (making it costs more than
    the statement it saves).

    Each statement on it is a transaction of its own. On SQLite it is the engine itself:
    SQLite runs in the process, so its ``BEGIN`` and ``COMMIT`` are no round trips, and
    switching a connection's mode costs more than they do (and, in memory, where every
    session shares one connection, would end a transaction of the app's).
    """

    def __init__(self, db: Any):
        self.db = db
        self._made: tuple[Engine, Engine] | None = None

    def __call__(self) -> Engine:
        engine: Engine = self.db.engine
        made = self._made
        if made is None or made[0] is not engine:
            own = engine
            if engine.dialect.name != "sqlite":
                own = engine.execution_options(isolation_level="AUTOCOMMIT")
            made = self._made = (engine, own)
        return made[1]
