"""Retention: delete the rows no one can need any more (``flask m2m prune``).

- opaque tokens and revoked-JWT entries once their token is past ``exp`` by more than twice
  ``M2M_LEEWAY`` (once for the leeway ``require_scope`` grants, once more for clock skew
  between the instance that prunes and those that verify), so every such token is refused
  as expired, with or without its row;
- client secrets once past their ``expires_at`` by more than ``M2M_LEEWAY`` (an expired
  secret never works again);
- audit events older than ``M2M_AUDIT_RETENTION_DAYS``, when that is set.

Rows go in batches, each one ``DELETE`` in a short transaction of its own on a connection of
its own, so the host app's ``db.session`` is never committed nor rolled back. Several runs at
once are safe: on PostgreSQL each batch takes rows no other run has locked (``FOR UPDATE
SKIP LOCKED``), on SQLite the database's write lock serialises the batches, and a row some
other run deleted first is simply not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, func, inspect, select
from sqlalchemy.orm import Session

from .models import utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .state import M2MState

#: Rows deleted per transaction unless told otherwise.
BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class PruneResult:
    """How many rows of each kind were deleted (or, in a dry run, would be)."""

    opaque_tokens: int = 0
    revoked_tokens: int = 0
    client_secrets: int = 0
    audit_events: int = 0

    @property
    def total(self) -> int:
        """All the rows together."""
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        """The counts by kind, as the CLI prints them and the ``pruned`` audit row holds them."""
        return asdict(self)


def token_cutoff(leeway: int, now: int) -> int:
    """Tokens whose ``exp`` is before this Unix time are refused as expired everywhere.

    :param leeway: ``M2M_LEEWAY``, in seconds.
    :param now: the current Unix time.
    """
    return now - 2 * leeway


def prune(
    state: M2MState,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    actor: str = "system",
    dry_run: bool = False,
) -> PruneResult:
    """Delete expired tokens and secrets and, with ``M2M_AUDIT_RETENTION_DAYS``, old audit
    events; write one ``pruned`` audit event with the counts unless nothing was deleted.

    Needs an app context; call it outside a write transaction of your own on SQLite (the
    batches wait for the database's write lock).

    :param now: the current time (timezone-aware; for tests), by default :func:`utcnow`.
    :param batch_size: most rows deleted per transaction.
    :param actor: the principal named by the audit event (the CLI gives ``cli:<user>``).
    :param dry_run: count what would be deleted, delete and record nothing.
    :raises ValueError: for a naive ``now`` or a ``batch_size`` below 1.
    """
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    settings, models, engine = state.settings, state.models, state.db.engine
    expired_before = token_cutoff(settings.leeway, int(now.timestamp()))
    kinds: dict[str, tuple[Any, ColumnElement[bool] | None]] = {
        "opaque_tokens": (models.opaque_token, models.opaque_token.expires_at < expired_before),
        "revoked_tokens": (models.revoked_token, models.revoked_token.expires_at < expired_before),
        "client_secrets": (
            models.client_secret,
            models.client_secret.expires_at < now - timedelta(seconds=settings.leeway),
        ),
        "audit_events": (models.audit_event, None),  # kept forever unless a retention is set
    }
    if settings.audit_retention_days is not None:
        oldest = now - timedelta(days=settings.audit_retention_days)
        kinds["audit_events"] = (models.audit_event, models.audit_event.created_at < oldest)
    counts = {}
    for kind, (model, condition) in kinds.items():
        if condition is None:
            counts[kind] = 0
        elif dry_run:
            counts[kind] = _count(engine, model, condition)
        else:
            counts[kind] = _delete(engine, model, condition, batch_size)
    result = PruneResult(**counts)
    if result.total and not dry_run:
        _record(state, engine, actor, result)
    return result


def _primary_key(model: Any) -> Any:
    (column,) = inspect(model).primary_key
    return column


def _count(engine: Engine, model: Any, condition: ColumnElement[bool]) -> int:
    with engine.connect() as connection:
        count = connection.scalar(select(func.count()).select_from(model).where(condition))
    return int(count or 0)


def _delete(engine: Engine, model: Any, condition: ColumnElement[bool], batch_size: int) -> int:
    """Delete the rows meeting ``condition``, ``batch_size`` at most per transaction.

    Each batch is one statement, ``DELETE … WHERE pk IN (SELECT pk … LIMIT n) AND condition``:
    on SQLite its first step is a write, so it waits for the write lock (busy timeout) rather
    than failing to upgrade a read; on PostgreSQL the inner select skips rows that another run
    has locked, so runs neither wait for nor deadlock with each other.
    """
    pk = _primary_key(model)
    batch = select(pk).where(condition).limit(batch_size).correlate(None)
    if engine.dialect.name == "postgresql":
        batch = batch.with_for_update(skip_locked=True)
    statement = delete(model).where(pk.in_(batch), condition)
    total = 0
    while True:
        with engine.begin() as connection:
            deleted = max(connection.execute(statement).rowcount, 0)
        total += deleted
        if deleted < batch_size:  # the last batch: nothing more this run can take
            return total


def _record(state: M2MState, engine: Engine, actor: str, result: PruneResult) -> None:
    """Write the ``pruned`` audit event, in a transaction of its own."""
    row = state.models.audit_event(
        event="pruned",
        client_id=None,
        actor=actor,
        request_id=None,
        changes=result.as_dict(),
        created_at=utcnow(),
    )
    with Session(engine) as session, session.begin():
        session.add(row)
