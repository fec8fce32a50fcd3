"""flask-m2m: the initial m2m_* tables.

Revision ID: m2m_0001
Revises:
Create Date: 2026-11-26

Indexes and the unique constraint are declared on the columns (``index=True``,
``unique=True``), as the models do, so their names follow the app's naming convention exactly
as the models' names do. ``UTCDateTime`` is stored as ``DateTime(timezone=True)``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "m2m_0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = ("flask_m2m",)
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "m2m_clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, index=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rate_limit", sa.String(64), nullable=True),
        sa.Column("rate_limit_mode", sa.String(16), nullable=True),
        sa.Column("access_token_expires_in", sa.Integer(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tokens_valid_after", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "m2m_client_secrets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False, index=True),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "m2m_audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event", sa.String(64), nullable=False, index=True),
        sa.Column("client_id", sa.String(64), nullable=True, index=True),
        sa.Column("actor", sa.String(200), nullable=False, index=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "m2m_signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_jwk_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "m2m_revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False, index=True),
        sa.Column("expires_at", sa.Integer(), nullable=False, index=True),
    )
    op.create_table(
        "m2m_opaque_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("jti", sa.String(64), nullable=False, unique=True),
        sa.Column("client_id", sa.String(64), nullable=False, index=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("audience", sa.String(512), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("issued_at", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False, index=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "m2m_opaque_tokens",
        "m2m_revoked_tokens",
        "m2m_signing_keys",
        "m2m_audit_events",
        "m2m_client_secrets",
        "m2m_clients",
    ):
        op.drop_table(table)
