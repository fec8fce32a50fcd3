"""flask-m2m's Alembic revisions (Alembic skips this file; it makes the folder a package)."""

from __future__ import annotations
