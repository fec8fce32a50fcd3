"""Counting the round trips to the database: what reaches it through the DB-API.

Every statement executed on a cursor, the ``BEGIN`` psycopg sends by itself before the first
statement of a transaction, and a ``COMMIT`` or ``ROLLBACK`` of a transaction the server holds
open. SQLite runs in the process: there only the statements count (its driver's ``BEGIN`` and
``COMMIT`` are no round trips). Connections taken from the pool are counted apart: with
``pool_pre_ping`` each costs one more round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine


def _server_transaction(raw: Any) -> bool | None:
    """Whether the server holds a transaction open on this DB-API connection (psycopg);
    None for an in-process database (SQLite)."""
    status = getattr(getattr(raw, "info", None), "transaction_status", None)
    return None if status is None else int(status) != 0  # IDLE is 0


def _driver_begins(raw: Any) -> bool:
    """Whether the driver sends a ``BEGIN`` of its own before the next statement."""
    return _server_transaction(raw) is False and not raw.autocommit


class RoundTrips:
    """Counts the round trips to the database of one engine while listening."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.statements: list[str] = []
        self.checkouts = 0

    def _execute(self, conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        raw = conn.connection.dbapi_connection
        if _driver_begins(raw):
            self.statements.append("BEGIN (driver)")
        self.statements.append(statement.split(None, 1)[0].upper())

    def _end(self, name: str) -> Callable[[Connection], None]:
        def end(conn: Connection) -> None:
            if _server_transaction(conn.connection.dbapi_connection):
                self.statements.append(name)

        return end

    def _checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def __enter__(self) -> RoundTrips:
        self._listeners: list[tuple[Any, str, Any]] = [
            (self.engine, "before_cursor_execute", self._execute),
            (self.engine, "commit", self._end("COMMIT")),
            (self.engine, "rollback", self._end("ROLLBACK")),
            (self.engine.pool, "checkout", self._checkout),
        ]
        for target, name, listener in self._listeners:
            event.listen(target, name, listener)
        return self

    def __exit__(self, *exc: Any) -> None:
        for target, name, listener in self._listeners:
            event.remove(target, name, listener)

    @property
    def count(self) -> int:
        return len(self.statements)
