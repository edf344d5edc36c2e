"""End to end: the viewer warns of the idle timeout and keeps the session on request.

``streamspace up`` with a 30 s idle timeout warned of 27 s ahead, so the warning shows a
few seconds after the viewer connects (nobody types); *Keep session* puts it off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.harness import SCREENSHOTS, SESSION_TIMEOUT_MS, Platform, running_platform, sign_in

POLICY = {"SESSION_IDLE_TIMEOUT_MINUTES": "0.5", "SESSION_IDLE_WARNING_MINUTES": "0.45"}


@pytest.fixture
def idle_platform(tmp_path: Path) -> Iterator[Platform]:
    with running_platform(tmp_path, POLICY) as started:
        yield started


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_viewer_warns_before_the_idle_timeout(
    idle_platform: Platform, browser: Browser
) -> None:
    base = idle_platform.base_url
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, base)
        card = page.locator('[data-testid="template-card"][data-template="xterm"]')
        with page.expect_response(
            lambda r: r.url.endswith("/api/v1/sessions") and r.request.method == "POST"
        ) as created:
            card.get_by_test_id("launch-button").click()
        session_id = created.value.json()["id"]
        row = page.locator(f'[data-testid="session-row"][data-session-id="{session_id}"]')
        expect(row).to_have_attribute("data-state", "running", timeout=SESSION_TIMEOUT_MS)
        row.get_by_test_id("open-button").click()
        expect(page).to_have_url(re.compile(rf"#/sessions/{session_id}$"))
        expect(page.get_by_test_id("viewer-status")).to_contain_text("Connected", timeout=30_000)

        warning = page.get_by_test_id("viewer-idle-warning")
        expect(warning).to_be_visible()
        expect(page.get_by_test_id("viewer-idle-text")).to_contain_text(
            re.compile(r"will be hibernated in \d+ seconds")
        )
        (SCREENSHOTS / "viewer").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "viewer" / "idle-warning.png"))

        with page.expect_response(lambda r: r.url.endswith(f"/{session_id}/keep")) as kept:
            page.get_by_test_id("viewer-keep-button").click()
        assert kept.value.status == 200, kept.value.text()
        assert kept.value.json()["state"] == "running"
        expect(warning).to_be_hidden()
        expect(page.get_by_test_id("viewer-state")).to_have_text("running")
    finally:
        context.close()
