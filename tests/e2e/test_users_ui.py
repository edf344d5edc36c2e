"""End to end: user administration in a real browser against ``streamspace up``.

The administrator creates a user in the Users page (the generated temporary password is
shown once); the user signs in in another browser, must choose a new password first,
launches xterm, makes an API token on the Account page and opens the viewer; the
administrator disables them: their open viewer closes, their page falls back to the sign-in
form, and their API token is refused. Screenshots land in ``test-output/screenshots/users/``.
"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.e2e.harness import SCREENSHOTS, SESSION_TIMEOUT_MS, Platform, sign_in

pytestmark = pytest.mark.slow
SHOTS = SCREENSHOTS / "users"
CONNECT_TIMEOUT_MS = 30_000
CLOSE_TIMEOUT_MS = 5_000
"""The viewer closes within this of the disable (a cut, not a timeout)."""
NEW_PASSWORD = "alice-chose-this-1"


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=SHOTS / f"{name}.png")


def _accept(dialog: Dialog) -> None:
    dialog.accept()


def _create_user(admin: Page, base: str) -> str:
    """Create ``alice`` with a generated password in the Users page; returns it."""
    sign_in(admin, base)
    admin.get_by_test_id("nav-users").click()
    expect(admin.get_by_test_id("users-table")).to_be_visible()
    expect(admin.locator('[data-testid="user-row"][data-username="admin"]')).to_be_visible()
    admin.get_by_test_id("new-username").fill("alice")
    expect(admin.get_by_test_id("new-must-change")).to_be_checked()
    admin.get_by_test_id("user-create").click()
    secret = admin.get_by_test_id("user-secret-value")
    expect(secret).to_be_visible()
    expect(admin.get_by_test_id("user-secret")).to_contain_text("shown once")
    row = admin.locator('[data-testid="user-row"][data-username="alice"]')
    expect(row).to_have_attribute("data-state", "must change password")
    _shot(admin, "01-user-created")
    admin.get_by_test_id("user-q").fill("ALI")
    admin.get_by_test_id("user-q").press("Enter")
    expect(admin.get_by_test_id("user-row")).to_have_count(1)
    return secret.input_value()


def _first_sign_in(user: Page, base: str, temporary: str) -> None:
    user.goto(f"{base}/")
    user.get_by_label("Username", exact=True).fill("alice")
    user.get_by_label("Password", exact=True).fill(temporary)
    user.get_by_label("Password", exact=True).press("Enter")
    form = user.get_by_test_id("forced-password-form")
    expect(form).to_be_visible()
    expect(user.get_by_test_id("catalog")).to_be_hidden()
    _shot(user, "02-must-change")
    user.get_by_test_id("forced-current").fill(temporary)
    user.get_by_test_id("forced-new").fill(NEW_PASSWORD)
    user.get_by_test_id("forced-again").fill(NEW_PASSWORD + "x")
    user.get_by_test_id("forced-submit").click()
    expect(user.get_by_test_id("forced-error")).to_contain_text("not the same")
    user.get_by_test_id("forced-again").fill(NEW_PASSWORD)
    user.get_by_test_id("forced-submit").click()
    expect(user.get_by_test_id("current-user")).to_contain_text("alice")
    expect(user.get_by_test_id("template-card").first).to_be_visible()


def _make_api_token(user: Page) -> str:
    user.get_by_test_id("nav-account").click()
    user.get_by_test_id("token-name").fill("e2e script")
    user.get_by_test_id("token-create").click()
    secret = user.get_by_test_id("token-secret")
    expect(secret).to_have_value(re.compile(r"^ssp_"))
    expect(user.get_by_test_id("token-row")).to_have_count(1)
    _shot(user, "03-api-token")
    return secret.input_value()


def _launch_and_view(user: Page) -> str:
    user.get_by_test_id("nav-home").click()
    card = user.locator('[data-testid="template-card"][data-template="xterm"]')
    with user.expect_response(
        lambda r: r.url.endswith("/api/v1/sessions") and r.request.method == "POST"
    ) as created:
        card.get_by_test_id("launch-button").click()
    assert created.value.status == 201, created.value.text()
    session_id: str = created.value.json()["id"]
    row = user.locator(f'[data-testid="session-row"][data-session-id="{session_id}"]')
    expect(row).to_have_attribute("data-state", "running", timeout=SESSION_TIMEOUT_MS)
    row.get_by_test_id("open-button").click()
    expect(user.get_by_test_id("viewer-status")).to_contain_text(
        "Connected", timeout=CONNECT_TIMEOUT_MS
    )
    expect(user.get_by_test_id("viewer")).to_have_attribute("data-live", "true")
    _shot(user, "04-viewing")
    return session_id


@pytest.mark.timeout(300)
def test_admin_creates_a_user_who_is_then_disabled(platform: Platform, browser: Browser) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = platform.base_url
    admin_context = browser.new_context(viewport={"width": 1280, "height": 800})
    user_context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        admin, user = admin_context.new_page(), user_context.new_page()
        for page in (admin, user):
            page.set_default_timeout(15_000)
        admin.on("dialog", _accept)

        temporary = _create_user(admin, base)
        _first_sign_in(user, base, temporary)
        api_token = _make_api_token(user)
        _launch_and_view(user)
        headers = {"Authorization": f"Bearer {api_token}"}
        assert httpx.get(f"{base}/api/v1/auth/me", headers=headers).status_code == 200

        row = admin.locator('[data-testid="user-row"][data-username="alice"]')
        expect(row).to_have_attribute("data-state", "enabled")
        row.get_by_test_id("disable-button").click()
        expect(row).to_have_attribute("data-state", "disabled")
        _shot(admin, "05-disabled")

        # The viewer closes (the session is stopped), then the page finds its sign-in gone.
        expect(user.get_by_test_id("viewer")).to_have_attribute(
            "data-live", "false", timeout=CLOSE_TIMEOUT_MS
        )
        expect(user.get_by_test_id("login-form")).to_be_visible(timeout=CLOSE_TIMEOUT_MS)
        expect(user.get_by_test_id("login-error")).to_contain_text("disabled")
        _shot(user, "06-signed-out")
        assert httpx.get(f"{base}/api/v1/auth/me", headers=headers).status_code == 401

        user.get_by_label("Username", exact=True).fill("alice")
        user.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
        user.get_by_label("Password", exact=True).press("Enter")
        expect(user.get_by_test_id("login-error")).to_contain_text("disabled")
    finally:
        admin_context.close()
        user_context.close()
