"""Deprecated: renamed :mod:`flask_m2m.lifecycle` (the client-lifecycle service).

Every name still resolves here, with a :class:`DeprecationWarning`; this alias goes away in
0.3. (The token-fetching helper for workers is :mod:`flask_m2m.client`.)
"""

from __future__ import annotations

import warnings
from typing import Any

from . import client_fields, lifecycle


def __getattr__(name: str) -> Any:
    # the checks of client fields moved on to flask_m2m.client_fields
    home = client_fields if hasattr(client_fields, name) else lifecycle
    value = getattr(home, name)
    warnings.warn(
        f"flask_m2m.clients.{name} is deprecated: use {home.__name__}.{name}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
