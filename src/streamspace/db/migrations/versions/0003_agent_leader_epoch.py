"""Agent leader election: the highest fencing epoch seen per agent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("leader_epoch", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("leader_epoch")
