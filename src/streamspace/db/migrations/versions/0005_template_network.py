"""Templates say whether their sessions have network access (``host`` or ``none``).

Existing templates get ``none``, the secure default: an admin opts a template into the
host's network.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("network", sa.String(8), nullable=False, server_default="none"))


def downgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("network")
