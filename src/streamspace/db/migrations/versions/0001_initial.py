"""Initial schema: users, tokens, agents, templates, sessions, agent_commands, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from streamspace.db.models import Json, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PG_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION update_agent_commands_updated_at() RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
"""
PG_TRIGGER = """
CREATE TRIGGER agent_commands_updated_at_trigger BEFORE UPDATE ON agent_commands
FOR EACH ROW EXECUTE FUNCTION update_agent_commands_updated_at()
"""
# SQLite has no BEFORE-UPDATE assignment to NEW; an AFTER trigger writes the column
# (recursive triggers are off, so it does not fire itself). Six fractional digits match
# what SQLAlchemy writes, so text comparisons order correctly.
SQLITE_TRIGGER = """
CREATE TRIGGER agent_commands_updated_at_trigger AFTER UPDATE ON agent_commands
FOR EACH ROW BEGIN
    UPDATE agent_commands SET updated_at = strftime('%Y-%m-%d %H:%M:%f000', 'now')
    WHERE rowid = NEW.rowid;
END
"""


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(128), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "auth_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_auth_tokens_user_id", "auth_tokens", ["user_id"])
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(128), primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("approval", sa.String(16), nullable=False),
        sa.Column("api_key_hash", sa.String(64), nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("active_sessions", sa.Integer, nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("replica", sa.String(255)),
        sa.Column("last_heartbeat", UtcDateTime),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "templates",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("command", Json, nullable=False),
        sa.Column("vnc_port", sa.Integer, nullable=False),
        sa.Column("resources", Json, nullable=False),
        sa.Column("env", Json, nullable=False),
        sa.Column("platform", sa.String(32)),
        sa.Column("persistent_home", sa.Boolean, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("template_name", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("vnc_host", sa.String(255)),
        sa.Column("vnc_port", sa.Integer),
        sa.Column("platform_state", Json, nullable=False),
        sa.Column("persistent_home", sa.Boolean, nullable=False),
        sa.Column("idle_timeout", sa.Integer),
        sa.Column("last_activity", UtcDateTime),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("terminated_at", UtcDateTime),
        sa.Column("termination_reason", sa.Text),
    )
    op.create_index("ix_sessions_owner_id", "sessions", ["owner_id"])
    op.create_index("ix_sessions_agent_state", "sessions", ["agent_id", "state"])
    op.create_table(
        "agent_commands",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("command_id", sa.String(255), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(255)),
        sa.Column("session_id", sa.String(255)),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("payload", Json),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error_message", sa.Text),
        sa.Column("result", Json),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("sent_at", UtcDateTime),
        sa.Column("acknowledged_at", UtcDateTime),
        sa.Column("completed_at", UtcDateTime),
        sa.Column(
            "updated_at", UtcDateTime, nullable=False, server_default=sa.func.current_timestamp()
        ),
    )
    op.create_index("ix_agent_commands_agent_status", "agent_commands", ["agent_id", "status"])
    op.create_index("ix_agent_commands_status_updated", "agent_commands", ["status", "updated_at"])
    op.create_index("ix_agent_commands_session_id", "agent_commands", ["session_id"])
    op.create_table(
        "session_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_session_events_session_id", "session_events", ["session_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_TRIGGER_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER IF EXISTS agent_commands_updated_at_trigger ON agent_commands"
        if op.get_bind().dialect.name == "postgresql"
        else "DROP TRIGGER IF EXISTS agent_commands_updated_at_trigger"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS update_agent_commands_updated_at()")
    for table in (
        "session_events",
        "agent_commands",
        "sessions",
        "templates",
        "agents",
        "auth_tokens",
        "users",
    ):
        op.drop_table(table)
