"""flask-m2m: client audiences (RFC 8707), client keys (RFC 7523) and DPoP (RFC 9449).

Revision ID: m2m_0002
Revises: m2m_0001
Create Date: 2026-11-27

Adds to ``m2m_clients`` the resource identifiers a client may ask tokens for, its token
endpoint authentication method with its public keys (inline JWK Set or ``jwks_uri``) and
whether its tokens must be DPoP-bound; to ``m2m_opaque_tokens`` the thumbprint a token is
bound to; and the ``m2m_used_jtis`` table of assertion and proof ``jti`` values seen once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "m2m_0002"
down_revision: str | None = "m2m_0001"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("m2m_clients") as batch:
        batch.add_column(sa.Column("audiences", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column(
                "token_endpoint_auth_method",
                sa.String(32),
                nullable=False,
                server_default="client_secret_basic",
            )
        )
        batch.add_column(sa.Column("jwks", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("jwks_uri", sa.String(2048), nullable=True))
        batch.add_column(
            sa.Column(
                "dpop_bound_access_tokens", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    clients = sa.table("m2m_clients", sa.column("audiences", sa.JSON()))
    op.execute(clients.update().values(audiences=[]))
    with op.batch_alter_table("m2m_clients") as batch:
        batch.alter_column("audiences", existing_type=sa.JSON(), nullable=False)
        # The server defaults only filled the existing rows; the models set the values.
        batch.alter_column(
            "token_endpoint_auth_method", existing_type=sa.String(32), server_default=None
        )
        batch.alter_column(
            "dpop_bound_access_tokens", existing_type=sa.Boolean(), server_default=None
        )
    with op.batch_alter_table("m2m_opaque_tokens") as batch:
        batch.add_column(sa.Column("jkt", sa.String(64), nullable=True))
    op.create_table(
        "m2m_used_jtis",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Integer(), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("m2m_used_jtis")
    with op.batch_alter_table("m2m_opaque_tokens") as batch:
        batch.drop_column("jkt")
    with op.batch_alter_table("m2m_clients") as batch:
        for column in (
            "dpop_bound_access_tokens",
            "jwks_uri",
            "jwks",
            "token_endpoint_auth_method",
            "audiences",
        ):
            batch.drop_column(column)
