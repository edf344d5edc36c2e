"""The scrape's database gauges: sessions by state and by template, read at scrape time,
and a state or template that has no sessions left does not keep its last count."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from streamspace.controlplane.hub import AgentHub
from streamspace.controlplane.metrics_server import exposition
from streamspace.db.engine import SessionFactory
from streamspace.db.models import Session
from streamspace.states import SessionState
from tests.unit.core.conftest import Rows


async def _scrape(hub: AgentHub, db: SessionFactory) -> dict[tuple[str, ...], float]:
    """``(sample name, [template,] state) -> value`` of the session gauges."""
    text = (await exposition(hub=hub, db=db)).decode()
    return {
        (sample.name, *filter(None, (sample.labels.get("template"), sample.labels["state"]))): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        if family.name.startswith("streamspace_sessions")
        for sample in family.samples
    }


async def test_sessions_are_counted_by_state_and_by_template(
    rows: Rows, hub: AgentHub, migrated_db: SessionFactory
) -> None:
    await rows.session(SessionState.RUNNING, template="firefox")
    await rows.session(SessionState.RUNNING, template="firefox")
    xterm = await rows.session(SessionState.HIBERNATED, template="xterm")

    scraped = await _scrape(hub, migrated_db)
    assert scraped[("streamspace_sessions", "running")] == 2
    assert scraped[("streamspace_sessions", "hibernated")] == 1
    assert scraped[("streamspace_sessions", "failed")] == 0
    assert scraped[("streamspace_sessions_by_template", "firefox", "running")] == 2
    assert scraped[("streamspace_sessions_by_template", "xterm", "hibernated")] == 1

    async with migrated_db() as db, db.begin():
        await db.execute(
            update(Session).where(Session.id == xterm).values(state=SessionState.TERMINATED)
        )
    scraped = await _scrape(hub, migrated_db)
    assert scraped[("streamspace_sessions", "hibernated")] == 0
    assert scraped[("streamspace_sessions", "terminated")] == 1
    assert ("streamspace_sessions_by_template", "xterm", "hibernated") not in scraped
    assert scraped[("streamspace_sessions_by_template", "xterm", "terminated")] == 1
