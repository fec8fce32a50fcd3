"""What an unreachable database or rate-limit storage becomes: a 503, logged in one line.

Every route of flask-m2m answers such an outage with 503 and no detail (the protocol routes
and ``require_scope`` as ``temporarily_unavailable`` JSON, the management API as a problem
object); the connection pool reconnects by itself once the service is back.
"""

from __future__ import annotations

from flask import current_app
from limits.errors import StorageError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

#: Database errors that mean "cannot reach or use the database now", not "bad query".
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
)
#: Errors that make a request fail with 503: the database's, and the rate-limit storage's
#: when it fails closed (``M2M_RATE_LIMIT_FAIL_OPEN = False``).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, StorageError)


def log_outage(error: Exception) -> None:
    """One warning line naming the error's class, never its text (it may hold SQL or URLs)."""
    what = "rate-limit storage" if isinstance(error, StorageError) else "database"
    current_app.logger.warning(
        "flask-m2m: %s unavailable (%s); answered 503", what, type(error).__name__
    )
