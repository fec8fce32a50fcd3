"""Single use of ``jti`` values (DPoP proofs, client assertions): :class:`ReplayStore`.

A minimal store kept in this process's memory.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from .state import M2MState


class ReplayStore:
    """Remembers each ``(kind, issuer, jti)`` until it expires."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    def first_use(self, kind: str, issuer: str, jti: str, expires_at: int) -> bool:
        """True the first time ``jti`` of ``issuer`` is seen for ``kind``; False on a replay."""
        now = int(time.time())
        with self._lock:
            if len(self._seen) > 10000:
                self._seen = {k: exp for k, exp in self._seen.items() if exp >= now}
            key = (kind, issuer, jti)
            known = self._seen.get(key)
            if known is not None and known >= now:
                return False
            self._seen[key] = expires_at
            return True


def replay_store(app: Flask, state: M2MState) -> ReplayStore:
    """The replay store of ``app``."""
    return ReplayStore()
