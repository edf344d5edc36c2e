"""Keyset pages: cursors, and lists paged while rows are inserted (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from streamspace.controlplane.audit import Actor, AuditLog
from streamspace.controlplane.audit.log import bounded
from streamspace.db.engine import SessionFactory, reading, transaction
from streamspace.db.models import Session, SessionEvent, Template, User
from streamspace.db.repo import audit as audit_repo
from streamspace.db.repo import sessions as session_repo
from streamspace.db.repo import templates as template_repo
from streamspace.db.repo.pages import BadCursor, PageRequest, decode, encode
from streamspace.states import SessionState

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ANN = User(id="u1", username="ann", password_hash="x", role="user")


def test_a_cursor_carries_its_list_and_key() -> None:
    cursor = encode("sessions", (T0, "abc"))
    assert decode("sessions", cursor, (datetime, str)) == (T0, "abc")
    assert "=" not in cursor and "sessions" not in cursor  # URL-safe and opaque


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "bm90IGpzb24",  # "not json"
        encode("templates", ("abc",)),  # another list's
        encode("sessions", ("abc",)),  # too short
        encode("sessions", (T0.replace(tzinfo=None), "abc")),  # naive time
        encode("sessions", ("yesterday", "abc")),
        encode("sessions", (T0, 5)),
    ],
    ids=["garbage", "not-json", "other-list", "short", "naive", "not-a-time", "wrong-type"],
)
def test_a_bad_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode("sessions", cursor, (datetime, str))


def test_audit_detail_is_small_and_never_secret() -> None:
    detail = bounded({"password": "x", "api_key": "y", "Token": "z", "note": "n" * 1000, "n": 3})
    assert detail == {"note": "n" * 256, "n": 3}
    assert len(bounded({f"f{n}": n for n in range(50)})) == 12


async def _add_sessions(db: SessionFactory, ids: list[str], at: datetime) -> None:
    async with transaction(db) as session:
        for session_id in ids:
            session.add(
                Session(id=session_id, owner_id=ANN.id, template_name="xterm", created_at=at)
            )


async def _sessions_page(db: SessionFactory, page: PageRequest) -> tuple[list[str], str | None]:
    async with reading(db) as session:
        found = await session_repo.list_sessions(session, owner_id=None, page=page)
    return [s.id for s in found.items], found.next


@pytest.fixture
async def db(migrated_db: SessionFactory) -> SessionFactory:
    async with transaction(migrated_db) as session:
        session.add(User(id=ANN.id, username=ANN.username, password_hash="x", role="user"))
    return migrated_db


async def test_newest_first_pages_neither_repeat_nor_skip_while_rows_arrive(
    db: SessionFactory,
) -> None:
    """Sessions newest first, ties on created_at broken by id: rows inserted between pages
    (newer ones, and ones at the very time of the cursor's row) shift nothing."""
    older = [f"s-{n:02d}" for n in range(12)]
    await _add_sessions(db, older[:6], T0)
    await _add_sessions(db, older[6:], T0 + timedelta(seconds=1))
    first, cursor = await _sessions_page(db, PageRequest(limit=5))
    expected = [*sorted(older[6:], reverse=True), *sorted(older[:6], reverse=True)]
    assert first == expected[:5] and cursor is not None
    await _add_sessions(db, ["new-1", "new-2"], T0 + timedelta(minutes=1))
    seen = list(first)
    while cursor is not None:
        page, cursor = await _sessions_page(db, PageRequest(limit=5, cursor=cursor))
        seen += page
    assert seen == expected  # all 12 once, in order; the new ones are on a fresh first page
    assert (await _sessions_page(db, PageRequest(limit=2)))[0] == ["new-2", "new-1"]


async def test_an_ascending_list_shows_rows_inserted_after_the_cursor(db: SessionFactory) -> None:
    def template(name: str) -> Template:
        return Template(name=name, display_name=name, command=[])

    async with transaction(db) as session:
        for name in ("b", "d", "f", "h"):
            session.add(template(name))
    async with reading(db) as session:
        first = await template_repo.list_templates(session, PageRequest(limit=2))
    assert [t.name for t in first.items] == ["b", "d"]
    async with transaction(db) as session:
        session.add(template("a"))  # before the cursor: on no later page
        session.add(template("e"))  # after it: on the next
    async with reading(db) as session:
        second = await template_repo.list_templates(session, PageRequest(2, first.next))
        assert [t.name for t in second.items] == ["e", "f"]
        third = await template_repo.list_templates(session, PageRequest(2, second.next))
    assert [t.name for t in third.items] == ["h"] and third.next is None


async def _audit_page(
    audit: AuditLog, page: PageRequest, filters: audit_repo.Filters | None = None
) -> tuple[list[tuple[str, int]], str | None]:
    found = await audit.list(filters or audit_repo.Filters(), page)
    return [(entry.source, entry.id) for entry in found.items], found.next


async def test_the_audit_list_merges_actions_and_transitions(db: SessionFactory) -> None:
    """Actions and session transitions in one list, newest first, paged across the two
    tables (ties on the time included) while more of both arrive."""
    audit = AuditLog(db=db)
    alice = Actor(id="u1", name="ann", address="192.0.2.7")
    async with transaction(db) as session:
        for n in range(4):
            at = T0 + timedelta(seconds=n // 2)  # two of each at every second
            session.add(SessionEvent(session_id=f"s{n}", to_state="pending", created_at=at))
    for n in range(4):
        async with transaction(db) as session:
            await audit.record(session, alice, "session.stop", target=("session", f"s{n}"))
    everything, _ = await _audit_page(audit, PageRequest(limit=100))
    assert len(everything) == 8
    first, cursor = await _audit_page(audit, PageRequest(limit=3))
    assert first == everything[:3]
    async with transaction(db) as session:
        await audit.record(session, alice, "template.delete", target=("template", "x"))
        session.add(SessionEvent(session_id="late", to_state="pending"))
    seen = list(first)
    while cursor is not None:
        page, cursor = await _audit_page(audit, PageRequest(limit=3, cursor=cursor))
        seen += page
    assert seen == everything
    latest, _ = await _audit_page(audit, PageRequest(limit=2))
    assert {source for source, _ in latest} == {"audit", "transition"}


async def test_audit_filters(db: SessionFactory) -> None:
    audit = AuditLog(db=db)
    ann = Actor(id="u1", name="ann", address="192.0.2.7")
    async with transaction(db) as session:
        await audit.record(session, ann, "session.stop", target=("session", "s1"))
        await audit.record(session, ann, "template.update", target=("template", "xterm"))
        session.add(SessionEvent(session_id="s1", to_state="stopping", from_state="running"))
        session.add(SessionEvent(session_id="s2", to_state="pending"))

    async def actions(**filters: object) -> list[str]:
        found = await audit.list(audit_repo.Filters(**filters), PageRequest())  # type: ignore[arg-type]
        return sorted(f"{e.action}:{e.target_id}" for e in found.items)

    assert await actions(actor="ann") == ["session.stop:s1", "template.update:xterm"]
    assert await actions(action="session.*") == [
        "session.stop:s1",
        "session.transition:s1",
        "session.transition:s2",
    ]
    assert await actions(target_kind="session", target_id="s1") == [
        "session.stop:s1",
        "session.transition:s1",
    ]
    assert await actions(actor="system") == ["session.transition:s1", "session.transition:s2"]
    assert await actions(action="template.update") == ["template.update:xterm"]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await actions(since=future) == []
    assert len(await actions(until=future)) == 4


async def test_an_audit_line_is_logged_when_the_change_commits_and_only_then(
    db: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AuditLog(db=db)
    ann = Actor(id="u1", name="ann", address="192.0.2.7")
    caplog.set_level(logging.INFO, logger="streamspace.audit")
    with pytest.raises(RuntimeError):
        async with transaction(db) as session:
            await audit.record(session, ann, "template.delete", target=("template", "gone"))
            raise RuntimeError("the change failed")
    assert not [r for r in caplog.records if r.name == "streamspace.audit"]
    assert (await audit.list(audit_repo.Filters(), PageRequest())).items == []
    async with transaction(db) as session:
        await audit.record(
            session, ann, "template.update", target=("template", "xterm"), detail={"a": 1}
        )
        session_repo.transition(
            session,
            Session(id="s1", owner_id=ANN.id, template_name="xterm", state="running"),
            SessionState.STOPPING,
        )
        assert not [r for r in caplog.records if r.name == "streamspace.audit"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "streamspace.audit"]
    assert [(line["action"], line["actor"], line["target_id"]) for line in lines] == [
        ("template.update", "ann", "xterm"),
        ("session.transition", "system", "s1"),
    ]
    assert lines[0]["address"] == "192.0.2.7" and lines[0]["detail"] == {"a": 1}
    assert lines[1]["detail"] == {"from": "running", "to": "stopping", "reason": None}
