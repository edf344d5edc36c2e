"""What the browser tests share: ``streamspace up`` on a free port, Debian's chromium driven
by Playwright, and signing in through the form."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

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
def running_platform(tmp_path: Path, env: Mapping[str, str] = {}) -> Iterator[Platform]:
    """``streamspace up`` on a free port with its data under ``tmp_path`` (and ``env`` set:
    settings); SIGINT at the end."""
    if not STREAMSPACE.exists():
        pytest.fail(f"{STREAMSPACE} is missing; install the project into the venv")
    port = _free_port()
    log_path = tmp_path / "up.log"
    env = {**os.environ, "STREAMSPACE_ADMIN_PASSWORD": ADMIN_PASSWORD, **env}
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


def sign_in(page: Page, base_url: str, username: str = ADMIN_USER) -> None:
    """Sign in through the form (keyboard: Enter submits) and wait for the catalog."""
    page.goto(f"{base_url}/")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    page.get_by_label("Password", exact=True).press("Enter")
    expect(page.get_by_test_id("current-user")).to_contain_text(username)
    expect(page.get_by_test_id("template-card").first).to_be_visible()
