"""Agents count their active sessions (``used_slots``), kept by triggers on ``sessions``.

Placement read the count by joining every active session of the online agents for every
launch batch, so launches slowed as sessions accumulated. The triggers keep the count in
the same statement that inserts, moves, ends or deletes a session, whichever code path it
is; the reconciler compares it with the sessions and repairs a drift.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# streamspace.states.ACTIVE_SESSION_STATES when written (a migration does not follow the code).
ACTIVE = "('pending', 'running', 'stopping', 'hibernating', 'waking')"

INITIALISE = f"""
UPDATE agents SET used_slots = (
    SELECT count(*) FROM sessions
    WHERE sessions.agent_id = agents.agent_id AND sessions.state IN {ACTIVE}
)
"""

# PostgreSQL: statement-level triggers with transition tables, one UPDATE per statement
# however many sessions it touches. The agents are locked in id order first, so two
# statements that touch several agents cannot deadlock each other.
PG_DELTAS = {
    "insert": f"SELECT agent_id, count(*) AS n FROM new_rows WHERE state IN {ACTIVE} "
    "GROUP BY agent_id",
    "update": f"""SELECT agent_id, sum(n) AS n FROM (
        SELECT agent_id, 1 AS n FROM new_rows WHERE state IN {ACTIVE}
        UNION ALL
        SELECT agent_id, -1 AS n FROM old_rows WHERE state IN {ACTIVE}
    ) AS c GROUP BY agent_id HAVING sum(n) <> 0""",
    "delete": f"SELECT agent_id, -count(*) AS n FROM old_rows WHERE state IN {ACTIVE} "
    "GROUP BY agent_id",
}
"""Per event: the change of each agent's count, from the statement's transition tables."""
PG_TRANSITIONS = {
    "insert": "NEW TABLE AS new_rows",
    "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "OLD TABLE AS old_rows",
}
PG_FUNCTION = """
CREATE FUNCTION sessions_used_slots_{event}() RETURNS TRIGGER AS $$
BEGIN
    PERFORM 1 FROM agents WHERE agent_id IN (SELECT agent_id FROM ({delta}) AS d)
        ORDER BY agent_id FOR UPDATE;
    UPDATE agents SET used_slots = agents.used_slots + d.n
    FROM ({delta}) AS d WHERE agents.agent_id = d.agent_id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""
PG_TRIGGER = """
CREATE TRIGGER sessions_used_slots_{event} AFTER {event} ON sessions
REFERENCING {transitions} FOR EACH STATEMENT EXECUTE FUNCTION sessions_used_slots_{event}()
"""

# SQLite: row-level triggers (it has no statement-level ones).
SQLITE_TRIGGERS = {
    "insert": f"""
CREATE TRIGGER sessions_used_slots_insert AFTER INSERT ON sessions
WHEN NEW.state IN {ACTIVE}
BEGIN
    UPDATE agents SET used_slots = used_slots + 1 WHERE agent_id = NEW.agent_id;
END
""",
    "update": f"""
CREATE TRIGGER sessions_used_slots_update AFTER UPDATE OF state, agent_id ON sessions
BEGIN
    UPDATE agents SET used_slots = used_slots - 1
    WHERE agent_id = OLD.agent_id AND OLD.state IN {ACTIVE};
    UPDATE agents SET used_slots = used_slots + 1
    WHERE agent_id = NEW.agent_id AND NEW.state IN {ACTIVE};
END
""",
    "delete": f"""
CREATE TRIGGER sessions_used_slots_delete AFTER DELETE ON sessions
WHEN OLD.state IN {ACTIVE}
BEGIN
    UPDATE agents SET used_slots = used_slots - 1 WHERE agent_id = OLD.agent_id;
END
""",
}


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("used_slots", sa.Integer, nullable=False, server_default="0"))
    op.execute(INITIALISE)
    if op.get_bind().dialect.name == "postgresql":
        for event, delta in PG_DELTAS.items():
            op.execute(PG_FUNCTION.format(event=event, delta=delta))
            op.execute(PG_TRIGGER.format(event=event, transitions=PG_TRANSITIONS[event]))
    else:
        for trigger in SQLITE_TRIGGERS.values():
            op.execute(trigger)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for event in SQLITE_TRIGGERS:
        name = f"sessions_used_slots_{event}"
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON sessions" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("used_slots")
