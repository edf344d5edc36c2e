"""VNC tunnel: single-use connect tokens, and each session's active viewer count.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from streamspace.db.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vnc_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(36),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("used_at", UtcDateTime),
    )
    op.create_index("ix_vnc_tokens_session_id", "vnc_tokens", ["session_id"])
    op.create_index("ix_vnc_tokens_expires_at", "vnc_tokens", ["expires_at"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("active_viewers", sa.Integer, nullable=False, server_default="0")
        )


def downgrade() -> None:
    op.drop_table("vnc_tokens")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("active_viewers")
