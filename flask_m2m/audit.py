"""The audit trail: one row per change, with the acting principal, time and request id."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from flask import g, has_request_context, request
from sqlalchemy import select
from sqlalchemy.orm import Session, scoped_session

from .errors import InvalidClientData
from .models import utcnow
from .pagination import Page, decode_cursor, fetch_page
from .policy import PAGE_SIZE

if TYPE_CHECKING:
    from .state import M2MState

#: What a caller-supplied ``X-Request-ID`` may look like to be recorded as is.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def request_id() -> str:
    """The request's ``X-Request-ID`` when well-formed, else a new id kept for the request."""
    rid = g.get("_m2m_request_id")
    if rid is None:
        sent = request.headers.get("X-Request-ID", "") if has_request_context() else ""
        rid = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        g._m2m_request_id = rid
    return str(rid)


def new_event(
    state: M2MState,
    event: str,
    client_id: str | None,
    changes: dict[str, Any] | None = None,
    *,
    actor: str,
) -> Any:
    """A new audit row, in no session yet.

    :param actor: the acting principal (``client:<id>``, ``cli:<user>``, an authorizer's
        principal...); there is no default.
    :raises TypeError: when ``actor`` is not a non-empty string.
    """
    if not isinstance(actor, str) or not actor:
        raise TypeError("actor must name the principal acting, e.g. 'cli:alice'.")
    return state.models.audit_event(
        event=event,
        client_id=client_id,
        actor=actor,
        request_id=request_id(),
        changes=changes or None,
        created_at=utcnow(),
    )


def record(
    state: M2MState,
    event: str,
    client_id: str | None,
    changes: dict[str, Any] | None = None,
    *,
    actor: str,
    session: Session | scoped_session[Session],
) -> Any:
    """Add an audit row to ``session``: it is committed with the change it describes, by
    whoever commits that session."""
    row = new_event(state, event, client_id, changes, actor=actor)
    session.add(row)
    return row


def list_events(
    state: M2MState,
    *,
    limit: int = PAGE_SIZE,
    cursor: str | None = None,
    client_id: str | None = None,
    event: str | None = None,
    actor: str | None = None,
    session: Session | scoped_session[Session] | None = None,
) -> Page:
    """Audit rows, newest first, filtered, one page at a time, read with ``session`` (default:
    the app's ``db.session``).

    :raises InvalidClientData: for a cursor this server did not make.
    """
    model = state.models.audit_event
    query = select(model).order_by(model.id.desc())
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        if not isinstance(last_id, int) or not 0 < last_id < 2**63:
            raise InvalidClientData("Not a cursor of this list.", field="cursor")
        query = query.where(model.id < last_id)
    if client_id is not None:
        query = query.where(model.client_id == client_id)
    if event is not None:
        query = query.where(model.event == event)
    if actor is not None:
        query = query.where(model.actor == actor)
    reader = state.db.session if session is None else session
    return fetch_page(reader, query, limit, lambda row: [row.id])
