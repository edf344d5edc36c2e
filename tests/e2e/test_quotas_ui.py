"""End to end: an administrator puts a user in a group with a quota of 2 in the web UI; the
user launches 2 sessions, sees "2 of 2 sessions running", and the third launch is refused
with the quota in words (chromium against ``streamspace up``).

The user is made with ``streamspace users create`` (the API has no user endpoint here).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.harness import ADMIN_PASSWORD, SCREENSHOTS, SESSION_TIMEOUT_MS, STREAMSPACE, Platform
from tests.e2e.harness import sign_in as sign_in_as

pytestmark = pytest.mark.slow

MEMBER = "quota-user"
REFUSAL = "quota reached: you may run 2 sessions at once (2 running)"


def create_user(data_dir: Path, username: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{data_dir / 'streamspace.db'}",
        "STREAMSPACE_USER_PASSWORD": ADMIN_PASSWORD,
    }
    done = subprocess.run(
        [str(STREAMSPACE), "users", "create", username], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()


def make_group(page: Page, shots: Path) -> None:
    """As the administrator: a group ``team`` with a quota of 2 and the member in it."""
    page.get_by_test_id("nav-groups").click()
    expect(page.get_by_role("heading", name="Groups")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("team")
    page.get_by_label("Description").fill("Two sessions each")
    page.get_by_label("Max running sessions").fill("2")
    page.get_by_test_id("group-submit").click()
    row = page.locator('[data-testid="group-row"][data-group="team"]')
    expect(row.get_by_test_id("group-quota")).to_contain_text("Running: 2")
    expect(row.get_by_test_id("group-quota")).to_contain_text("Hibernated: site default")
    expect(row.get_by_test_id("group-templates")).to_have_text("all")

    row.get_by_label("Username to add to group team").fill("nobody-here")
    row.get_by_test_id("add-member-button").click()
    expect(page.get_by_test_id("groups-error")).to_contain_text("user 'nobody-here' not found")

    row.get_by_label("Username to add to group team").fill(MEMBER)
    row.get_by_test_id("add-member-button").click()
    expect(row.locator(f'[data-testid="group-member"][data-username="{MEMBER}"]')).to_be_visible()
    expect(page.get_by_test_id("groups-error")).to_be_hidden()

    row.get_by_test_id("edit-group-button").click()
    expect(page.get_by_label("Max running sessions")).to_have_value("2")
    page.get_by_label("Max hibernated sessions").fill("1")
    page.get_by_test_id("group-submit").click()
    expect(row.get_by_test_id("group-quota")).to_contain_text("Hibernated: 1")
    expect(row.get_by_test_id("group-quota")).to_contain_text("Running: 2")
    page.screenshot(path=shots / "quota-01-group.png")


def launch(page: Page) -> int:
    """Click xterm's Launch; the status of the API's answer."""
    card = page.locator('[data-testid="template-card"][data-template="xterm"]')
    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/sessions") and r.request.method == "POST"
    ) as answer:
        card.get_by_test_id("launch-button").click()
    return answer.value.status


@pytest.mark.timeout(300)
def test_a_group_quota_of_two_refuses_the_third_launch(
    platform: Platform, browser: Browser, tmp_path: Path
) -> None:
    shots = SCREENSHOTS
    shots.mkdir(parents=True, exist_ok=True)
    create_user(tmp_path / "data", MEMBER)

    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = admin.new_page()
        page.set_default_timeout(15_000)
        sign_in_as(page, platform.base_url)
        make_group(page, shots)
    finally:
        admin.close()

    member = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = member.new_page()
        page.set_default_timeout(15_000)
        sign_in_as(page, platform.base_url, MEMBER)
        usage = page.get_by_test_id("quota-usage")
        expect(usage).to_have_text("Your quota: 0 of 2 sessions running · 0 of 1 hibernated")
        expect(page.get_by_test_id("nav-groups")).to_be_hidden()

        assert launch(page) == 201
        assert launch(page) == 201
        rows = page.get_by_test_id("session-row")
        expect(rows).to_have_count(2)
        for index in range(2):
            expect(rows.nth(index)).to_have_attribute(
                "data-state", "running", timeout=SESSION_TIMEOUT_MS
            )
        expect(usage).to_contain_text("Your quota: 2 of 2 sessions running")

        assert launch(page) == 429
        expect(page.get_by_test_id("catalog-error")).to_have_text(
            f"Could not launch Terminal (xterm): {REFUSAL}"
        )
        expect(rows).to_have_count(2)
        page.screenshot(path=shots / "quota-02-refused.png")

        for index in range(2):  # leave no session processes behind
            rows.nth(index).get_by_test_id("stop-button").click()
        for index in range(2):
            expect(rows.nth(index)).to_have_attribute(
                "data-state", "terminated", timeout=SESSION_TIMEOUT_MS
            )
        expect(usage).to_contain_text("Your quota: 0 of 2 sessions running")
    finally:
        member.close()
