"""flask-m2m's own writes: on connections of its own, never through the app's ``db.session``.

What flask-m2m writes on its own while it serves a request (last-used times and rehashed
secrets, audit rows of outdated secrets and rate-limit breaches, opaque tokens, revocations)
goes through a session of its own in a short transaction, so the app's session is never
flushed, committed nor rolled back by it. The signing keys (:mod:`flask_m2m.keys`) and
``prune`` (:mod:`flask_m2m.retention`) do the same.

SQLite has one write lock per database file. If the app's session holds it when flask-m2m
must write (the app's code wrote in this request, e.g. in a ``before_request`` function, and
has not committed), a second connection would wait for a lock released only after the
response, and fail at the busy timeout. So then bookkeeping (``wait_for_app=True``: last-used
times, outdated-secret and rate-limit audit rows) is written as soon as the app's transaction
ends, and a write that must be done before the response (an opaque token, a revocation, a
management change) raises :class:`AppHoldsWriteLock` at once. With ``sqlite://`` in memory
every session shares one connection, so there are no separate transactions at all.

A write of one statement (an opaque token) and a read of one query (a client's credentials)
need no transaction around them: they run on the engine in autocommit mode (:func:`execute`,
:class:`~flask_m2m.autocommit.Autocommit`), where the database sees the statement alone, with
no ``BEGIN`` before it nor ``COMMIT`` after it: one round trip instead of three on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

from .autocommit import Autocommit
from .errors import M2MError

#: ``Session.info`` key (of the app's session) of the writes waiting for its transaction.
_WAITING = "m2m:waiting_writes"

Work = Callable[[Session], None]

logger = logging.getLogger("flask_m2m")


class AppHoldsWriteLock(M2MError, RuntimeError):
    """flask-m2m must write now, but the app's session holds SQLite's write lock.

    .. versionadded:: 0.2
    """

    def __init__(self) -> None:
        super().__init__(
            "flask-m2m must write now, but the app's db.session holds SQLite's write lock "
            "(it wrote in this request and has not committed): commit or roll back first, "
            "e.g. at the end of the before_request function that wrote."
        )


def write(db: Any, work: Work, *, wait_for_app: bool = False) -> None:
    """Run ``work(session)`` in a short transaction of flask-m2m's own, committed at once.

    :param db: the app's Flask-SQLAlchemy object.
    :param wait_for_app: bookkeeping that may wait: while the app's session holds SQLite's
        write lock, it is written when the app's transaction ends (a failure then is logged).
    :raises AppHoldsWriteLock: when it may not wait and the app's session holds that lock.
    """
    if app_holds_write_lock(db):
        if not wait_for_app:
            raise AppHoldsWriteLock()
        _wait_for_app(db.session(), db.engine, work)
        return
    _run(db.engine, work)


def execute(db: Any, statement: Any, values: dict[str, Any], autocommit: Autocommit) -> None:
    """Run one statement as a transaction of its own, on a connection of the engine in
    autocommit mode: no ORM session around it (nothing to track), one round trip.

    :raises AppHoldsWriteLock: when the app's session holds SQLite's write lock.
    """
    if app_holds_write_lock(db):
        raise AppHoldsWriteLock()
    with autocommit().begin() as connection:
        connection.execute(statement, values)


@contextmanager
def own_session(db: Any) -> Iterator[Session]:
    """A session of flask-m2m's own from the app's session factory (the app's session events,
    such as cache invalidation, apply), committed at the end of the block, rolled back if it
    raises.

    :raises AppHoldsWriteLock: when the app's session holds SQLite's write lock.
    """
    if app_holds_write_lock(db):
        raise AppHoldsWriteLock()
    with db.session.session_factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def app_holds_write_lock(db: Any) -> bool:
    """Whether the app's session of this app context holds SQLite's write lock (it wrote
    and has not committed). Always False on other databases, whose locks are per row."""
    engine = db.engine
    if engine.dialect.name != "sqlite" or not db.session.registry.has():
        return False
    session = db.session()
    if not session.in_transaction():
        return False
    connection = session.connection(bind_arguments={"bind": engine}).connection.dbapi_connection
    return bool(getattr(connection, "in_transaction", False))


def _run(engine: Engine, work: Work) -> None:
    with Session(engine) as session, session.begin():
        work(session)


def _wait_for_app(session: Session, engine: Engine, work: Work) -> None:
    if not event.contains(session, "after_transaction_end", _write_waiting):
        event.listen(session, "after_transaction_end", _write_waiting)
    session.info.setdefault(_WAITING, []).append((engine, work))


def _write_waiting(session: Session, transaction: SessionTransaction) -> None:
    """Once the app's transaction has ended (its lock released): the writes that waited."""
    if transaction.parent is not None:
        return
    for engine, work in session.info.pop(_WAITING, []):
        try:
            _run(engine, work)
        except SQLAlchemyError as exc:  # bookkeeping: never fail the app's commit for it
            logger.warning(
                "flask-m2m: a bookkeeping write that waited for the app's transaction was "
                "lost (%s)",
                type(exc).__name__,
            )
