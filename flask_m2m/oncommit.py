"""Signals of a change, sent once the transaction holding the change has committed.

The client-lifecycle functions change rows in a session their caller commits; their signals
wait on that session and go out after its commit, so no receiver hears of a change that was
rolled back. A savepoint rolled back drops the signals queued inside it; a transaction that
ends without a commit drops them all. Receivers may use the session again (a new transaction).
"""

from __future__ import annotations

from typing import Any

from blinker import Signal
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

#: ``Session.info`` keys: the queued signals, and whether the root transaction committed.
_QUEUED = "m2m:queued_signals"
_COMMITTED = "m2m:committed"


def send_on_commit(
    session: Session | scoped_session[Session], signal: Signal, sender: Any, **kwargs: Any
) -> None:
    """Send ``signal`` once ``session``'s current transaction commits (never if it does not)."""
    target = session() if isinstance(session, scoped_session) else session
    transaction = target.get_nested_transaction() or target.get_transaction()
    if not event.contains(target, "after_transaction_end", _ended):
        event.listen(target, "after_commit", _committed)
        event.listen(target, "after_soft_rollback", _rolled_back)
        event.listen(target, "after_transaction_end", _ended)
    target.info.setdefault(_QUEUED, []).append((transaction, signal, sender, kwargs))


def _committed(session: Session) -> None:
    if not session.in_nested_transaction():  # a savepoint's release commits nothing yet
        session.info[_COMMITTED] = True


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    queued = session.info.get(_QUEUED)
    if queued:
        session.info[_QUEUED] = [item for item in queued if not _within(item[0], previous)]


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    queued = session.info.pop(_QUEUED, [])
    if session.info.pop(_COMMITTED, False):
        for _, signal, sender, kwargs in queued:
            signal.send(sender, **kwargs)
