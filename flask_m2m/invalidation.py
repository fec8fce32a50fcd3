"""Forget what this process caches about a client as soon as the app's session changes it.

The listeners are registered by :meth:`flask_m2m.M2M.init_app` on the app's own session
factory (``db.session``), for that app only, and removed when the app is garbage-collected:
no module-level state, and several apps in one process keep their caches apart.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from .state import EXTENSION_KEY, M2MState

#: ``Session.info`` key of the clients a transaction changed.
_CHANGED = f"{EXTENSION_KEY}:changed_clients"


def _forget(state: M2MState, client_ids: set[str]) -> None:
    for client_id in client_ids:
        state.server.credentials.forget_client(client_id)
        state.tokens.forget_client(client_id)


def watch_client_changes(app: Flask, state: M2MState) -> None:
    """Drop ``state``'s cached credentials and tokens of a client whose row or secret the app's
    session writes: at flush, and again at commit (a request may read and cache the old row
    in between); a rollback forgets the pending set."""
    ref = weakref.ref(state)

    def own_state() -> M2MState | None:
        if not has_app_context():
            return None
        current = current_app.extensions.get(EXTENSION_KEY)
        return current if current is not None and current is ref() else None

    def before_flush(session: Session, flush_context: Any, instances: Any) -> None:
        found = own_state()
        if found is None:
            return
        kinds = (found.models.client, found.models.client_secret)
        changed = {
            obj.client_id
            for obj in (*session.new, *session.dirty, *session.deleted)
            if isinstance(obj, kinds)
        }
        if changed:
            session.info.setdefault(_CHANGED, set()).update(changed)
            _forget(found, changed)

    def after_commit(session: Session) -> None:
        changed = session.info.pop(_CHANGED, None)
        found = own_state()
        if changed and found is not None:
            _forget(found, changed)

    def after_rollback(session: Session) -> None:
        session.info.pop(_CHANGED, None)

    target = state.db.session
    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_flush", before_flush),
        ("after_commit", after_commit),
        ("after_rollback", after_rollback),
    ]
    for name, listener in listeners:
        event.listen(target, name, listener)
    weakref.finalize(app, _remove, target, listeners)


def _remove(target: Any, listeners: list[tuple[str, Callable[..., None]]]) -> None:
    for name, listener in listeners:
        if event.contains(target, name, listener):
            event.remove(target, name, listener)
