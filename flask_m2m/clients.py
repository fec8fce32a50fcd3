"""Deprecated: renamed :mod:`flask_m2m.lifecycle` (the client-lifecycle service).

Every name still resolves here, with a :class:`DeprecationWarning`; this alias goes away in
0.3. (The token-fetching helper for workers is :mod:`flask_m2m.client`.)
"""

from __future__ import annotations

import warnings
from typing import Any

from . import lifecycle


def __getattr__(name: str) -> Any:
    value = getattr(lifecycle, name)
    warnings.warn(
        f"flask_m2m.clients.{name} is deprecated: use flask_m2m.lifecycle.{name}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
