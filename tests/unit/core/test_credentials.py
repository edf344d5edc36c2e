"""Agents connecting together have their credentials read in one query, each its own."""

from __future__ import annotations

import asyncio

from streamspace.controlplane.agents.credentials import CredentialReader
from streamspace.db.engine import SessionFactory
from tests.unit.core.conftest import Rows


async def test_connections_arriving_together_each_get_their_own_agent(
    rows: Rows, migrated_db: SessionFactory
) -> None:
    await rows.agent("agent-a")
    await rows.agent("agent-b")
    reader = CredentialReader(db=migrated_db)

    a, unknown, b = await asyncio.gather(
        reader.get("agent-a"), reader.get("agent-unknown"), reader.get("agent-b")
    )

    assert unknown is None
    assert a is not None and b is not None
    assert (a.agent_id, a.approval, a.api_key_hash) == ("agent-a", "approved", "x")
    assert (b.agent_id, b.leader_epoch) == ("agent-b", None)
