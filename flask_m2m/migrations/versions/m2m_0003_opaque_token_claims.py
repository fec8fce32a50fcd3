"""flask-m2m: the extra claims of opaque access tokens.

Revision ID: m2m_0003
Revises: m2m_0002
Create Date: 2026-11-28

Adds to ``m2m_opaque_tokens`` the claims the app's ``token_claims`` hook added to a token,
which introspection returns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "m2m_0003"
down_revision: str | None = "m2m_0002"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("m2m_opaque_tokens") as batch:
        batch.add_column(sa.Column("extra_claims", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("m2m_opaque_tokens") as batch:
        batch.drop_column("extra_claims")
