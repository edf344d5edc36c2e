"""The audit log (``audit_events``) and the index that lists ``session_events`` with it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from streamspace.db.models import Json, UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("actor_id", sa.String(36), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_kind", sa.String(32), nullable=True),
        sa.Column("target_id", sa.String(255), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("detail", Json, nullable=False),
    )
    op.create_index("ix_audit_events_created_id", "audit_events", ["created_at", "id"])
    op.create_index("ix_audit_events_target", "audit_events", ["target_kind", "target_id"])
    op.create_index("ix_audit_events_actor", "audit_events", ["actor"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_session_events_created_id", "session_events", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_session_events_created_id", "session_events")
    op.drop_table("audit_events")
