"""Lifecycle policies: per-template idle timeout, maximum age and hibernated retention; the
effective policy of each session; the reason of commands the control plane issues itself.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from streamspace.db.models import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("idle_timeout_minutes", sa.Float(), nullable=True))
        batch.add_column(sa.Column("idle_action", sa.String(16), nullable=True))
        batch.add_column(sa.Column("max_age_minutes", sa.Float(), nullable=True))
        batch.add_column(sa.Column("hibernated_retention_days", sa.Float(), nullable=True))
        batch.add_column(sa.Column("retention_home", sa.String(8), nullable=True))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("idle_action", sa.String(16), nullable=True))
        batch.add_column(sa.Column("stop_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("hibernated_retention", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("retention_home", sa.String(8), nullable=True))
        batch.add_column(sa.Column("retain_until", UtcDateTime(), nullable=True))
    op.create_index("ix_sessions_state_activity", "sessions", ["state", "last_activity"])
    with op.batch_alter_table("agent_commands") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent_commands") as batch:
        batch.drop_column("reason")
    op.drop_index("ix_sessions_state_activity", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        for column in ("retain_until", "retention_home", "hibernated_retention", "stop_at"):
            batch.drop_column(column)
        batch.drop_column("idle_action")
    with op.batch_alter_table("templates") as batch:
        for column in (
            "retention_home",
            "hibernated_retention_days",
            "max_age_minutes",
            "idle_action",
            "idle_timeout_minutes",
        ):
            batch.drop_column(column)
