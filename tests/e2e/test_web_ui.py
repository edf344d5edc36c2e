"""End to end: the web UI in a real browser against ``streamspace up``.

Starts the whole embedded platform (API + local agent) as a subprocess, drives Debian's
chromium with Playwright through sign-in, launch, VNC and stop, and saves a screenshot of
each step under ``test-output/screenshots/``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
STREAMSPACE = REPO_ROOT / ".venv" / "bin" / "streamspace"
SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_USER = "admin"
ADMIN_PASSWORD = "e2e-Admin-pa55word"
STARTUP_TIMEOUT_S = 60.0
SESSION_TIMEOUT_MS = 60_000
SHUTDOWN_TIMEOUT_S = 15.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Platform:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _wait_healthy(proc: subprocess.Popen[bytes], base_url: str) -> None:
    """Poll /healthz until 200; the pause between tries is a wait on the process exiting."""
    with httpx.Client(timeout=2.0) as client:
        deadline_tries = int(STARTUP_TIMEOUT_S / 0.25)
        for _ in range(deadline_tries):
            try:
                if client.get(f"{base_url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                code = proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"streamspace up exited early with code {code}")
    raise AssertionError(f"{base_url}/healthz not healthy within {STARTUP_TIMEOUT_S}s")


@contextmanager
def running_platform(tmp_path: Path) -> Iterator[Platform]:
    """``streamspace up`` on a free port with its data under ``tmp_path``; SIGINT at the end."""
    if not STREAMSPACE.exists():
        pytest.fail(f"{STREAMSPACE} is missing; install the project into the venv")
    port = _free_port()
    log_path = tmp_path / "up.log"
    env = {**os.environ, "STREAMSPACE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    cmd = [str(STREAMSPACE), "up", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    platform = Platform(base_url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    try:
        _wait_healthy(proc, platform.base_url)
        yield platform
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Shown by pytest only when the test fails.
        print(f"--- streamspace up log ({log_path}) ---\n{platform.log_tail(200)}")


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """Debian's chromium driven by Playwright."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; run: apt-get install -y chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    with running_platform(tmp_path) as started:
        yield started


@pytest.fixture
def browser() -> Iterator[Browser]:
    with headless_chromium() as started:
        yield started


def sign_in(page: Page, base_url: str, username: str = ADMIN_USER) -> None:
    """Sign in through the form (keyboard: Enter submits) and wait for the catalog."""
    page.goto(f"{base_url}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_label("Password").press("Enter")
    expect(page.get_by_test_id("current-user")).to_contain_text(username)
    expect(page.get_by_test_id("template-card").first).to_be_visible()


def _read_rfb_banner(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=10.0) as conn:
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
    expect(page.get_by_label("Username")).to_be_focused()
    page.screenshot(path=shots / "01-login.png")

    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill("definitely-not-the-password")
    page.get_by_role("button", name="Sign in").click()
    error = page.get_by_test_id("login-error")
    expect(error).to_be_visible()
    expect(error).to_have_text(re.compile(r"\w"))
    expect(login_form).to_be_visible()
    page.screenshot(path=shots / "02-login-error.png")

    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_label("Password").press("Enter")
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
    expect(endpoint).to_have_text(re.compile(r"^VNC:\s*\S+:\d+$"))
    page.screenshot(path=shots / "05-running.png")
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=shots / "05b-running-narrow.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    host, _, port = row.get_by_test_id("vnc-address").inner_text().strip().rpartition(":")
    host = host.strip("[]")
    assert _read_rfb_banner(host, int(port)) == b"RFB 003.008\n"

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
