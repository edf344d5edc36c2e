"""An ``Idempotency-Key`` answers for any creating POST, not only launches: a key names the
kind of thing it made (``resource``: session, template, group, user, api_token) and its id
(``resource_id``, formerly ``session_id``). Existing keys are launches.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.alter_column(
            "session_id",
            new_column_name="resource_id",
            existing_type=sa.String(36),
            type_=sa.String(255),
            existing_nullable=False,
        )
        batch.add_column(
            sa.Column("resource", sa.String(16), nullable=False, server_default="session")
        )


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys WHERE resource <> 'session'")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("resource")
        batch.alter_column(
            "resource_id",
            new_column_name="session_id",
            existing_type=sa.String(255),
            type_=sa.String(36),
            existing_nullable=False,
        )
