"""End to end: the web UI in a real browser against ``streamspace up``.

Starts the whole embedded platform (API + local agent) as a subprocess, drives Debian's
chromium with Playwright through sign-in, launch, VNC and stop, and saves a screenshot of
each step under ``test-output/screenshots/``.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from streamspace.agent.platforms.vnc_probe import unix_address
from tests.e2e.harness import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    SCREENSHOTS,
    SESSION_TIMEOUT_MS,
    SHUTDOWN_TIMEOUT_S,
    Platform,
)

pytestmark = pytest.mark.slow


def _connect(address: str) -> socket.socket:
    """A socket connected to the address the UI shows: ``unix:PATH`` or ``host:port``."""
    if address.startswith("unix:"):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10.0)
        with unix_address(address.removeprefix("unix:")) as path:
            conn.connect(path)
        return conn
    host, _, port = address.rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)), timeout=10.0)


def _read_rfb_banner(address: str) -> bytes:
    with _connect(address) as conn:
        data = b""
        while len(data) < 12:
            chunk = conn.recv(12 - len(data))
            if not chunk:
                break
            data += chunk
        return data


def run_ui_flow(page: Page, base_url: str, shots: Path) -> None:
    """Sign in, launch xterm, check its VNC endpoint, stop it, sign out."""
    shots.mkdir(parents=True, exist_ok=True)
    login_form = page.get_by_test_id("login-form")

    page.goto(f"{base_url}/")
    expect(login_form).to_be_visible()
    expect(page.get_by_label("Username", exact=True)).to_be_focused()
    page.screenshot(path=shots / "01-login.png")

    page.get_by_label("Username", exact=True).fill(ADMIN_USER)
    page.get_by_label("Password", exact=True).fill("definitely-not-the-password")
    page.get_by_role("button", name="Sign in").click()
    error = page.get_by_test_id("login-error")
    expect(error).to_be_visible()
    expect(error).to_have_text(re.compile(r"\w"))
    expect(login_form).to_be_visible()
    page.screenshot(path=shots / "02-login-error.png")

    page.get_by_label("Username", exact=True).fill(ADMIN_USER)
    page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    page.get_by_label("Password", exact=True).press("Enter")
    expect(page.get_by_test_id("current-user")).to_contain_text(ADMIN_USER)
    expect(login_form).to_be_hidden()
    card = page.locator('[data-testid="template-card"][data-template="xterm"]')
    expect(card).to_be_visible()
    page.screenshot(path=shots / "03-catalog.png")

    launch = card.get_by_test_id("launch-button")
    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/sessions") and r.request.method == "POST"
    ) as created:
        launch.click()
    assert created.value.status == 201, created.value.text()
    session_id = created.value.json()["id"]
    row = page.locator(f'[data-testid="session-row"][data-session-id="{session_id}"]')
    expect(row).to_be_visible()
    page.screenshot(path=shots / "04-launched.png")

    expect(row).to_have_attribute("data-state", "running", timeout=SESSION_TIMEOUT_MS)
    expect(row.get_by_test_id("open-button")).to_be_visible()
    endpoint = row.get_by_test_id("vnc-endpoint")
    expect(endpoint).to_be_visible()
    expect(endpoint).to_have_text(re.compile(r"^VNC:\s*(unix:/\S+|\S+:\d+)$"))
    page.screenshot(path=shots / "05-running.png")
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=shots / "05b-running-narrow.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    assert _read_rfb_banner(row.get_by_test_id("vnc-address").inner_text().strip()) == (
        b"RFB 003.008\n"
    )

    row.get_by_test_id("stop-button").click()
    expect(row).to_have_attribute("data-state", "terminated", timeout=SESSION_TIMEOUT_MS)
    expect(row.get_by_test_id("stop-button")).to_have_count(0)
    expect(row.get_by_test_id("open-button")).to_have_count(0)
    expect(row.get_by_test_id("vnc-endpoint")).to_have_count(0)
    page.screenshot(path=shots / "06-terminated.png")

    page.get_by_test_id("logout-button").click()
    expect(login_form).to_be_visible()
    expect(page.get_by_test_id("sessions-list")).to_be_hidden()
    page.screenshot(path=shots / "07-logged-out.png")


@pytest.mark.timeout(300)
def test_login_launch_vnc_stop(platform: Platform, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        run_ui_flow(page, platform.base_url, SCREENSHOTS)
    finally:
        context.close()

    platform.proc.send_signal(signal.SIGINT)
    try:
        platform.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"streamspace up did not exit within {SHUTDOWN_TIMEOUT_S}s of SIGINT")
