"""Open VNC tunnels per replica, so a dead replica's viewers can be uncounted.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from streamspace.db.models import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_viewers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(36),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("replica", sa.String(255), nullable=False),
        sa.Column("opened_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_session_viewers_session_id", "session_viewers", ["session_id"])
    op.create_index("ix_session_viewers_replica", "session_viewers", ["replica"])


def downgrade() -> None:
    op.drop_table("session_viewers")
