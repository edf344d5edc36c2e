"""End to end: the in-browser session viewer (noVNC over the VNC tunnel) and the admin pages.

Against ``streamspace up`` in headless Debian chromium: sign in, launch xterm, open it in the
viewer, see the desktop, type ``echo streamspace-ok`` + Enter and check the text shows (canvas
pixels change, the X server's own framebuffer read with ``xwd`` changes, and a triple-click on
the output line hands exactly ``streamspace-ok`` back through the clipboard), send clipboard
text into the session and paste it, go fullscreen, look at the admin pages, stop the session
from the UI and check its processes are gone. Screenshots of every page land in
``test-output/screenshots/viewer/``.
"""

from __future__ import annotations

import os
import re
import select
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, expect

from streamspace.web import pages
from tests.e2e.harness import ADMIN_USER, SCREENSHOTS, SESSION_TIMEOUT_MS, Platform, sign_in

SHOTS = SCREENSHOTS / "viewer"
MARKER = "STREAMSPACE_SESSION_ID"
CONNECT_TIMEOUT_MS = 30_000
PIXELS_TIMEOUT_MS = 20_000
HEARTBEAT_TIMEOUT_MS = 15_000
PROCESS_EXIT_TIMEOUT_S = 20.0

# ---- JavaScript run in the page against noVNC's canvas -----------------------------------

_CANVAS = "document.querySelector('#viewer-screen canvas')"

JS_NON_UNIFORM = f"""() => {{
  const c = {_CANVAS};
  if (!c || !c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let differing = 0;
  for (let i = 0; i < d.length; i += 4) {{
    const dist = Math.abs(d[i] - d[0]) + Math.abs(d[i + 1] - d[1]) + Math.abs(d[i + 2] - d[2]);
    if (dist > 30) differing++;
  }}
  return differing;
}}"""

# The top-left part of the desktop, where xterm's first lines are.
JS_SNAPSHOT = f"""() => {{
  const c = {_CANVAS};
  const w = Math.min(c.width, 640), h = Math.min(c.height, 160);
  window.__ssBefore = Array.from(c.getContext('2d').getImageData(0, 0, w, h).data);
  return [w, h];
}}"""

JS_CHANGED_SINCE_SNAPSHOT = f"""() => {{
  const c = {_CANVAS};
  const before = window.__ssBefore;
  const w = Math.min(c.width, 640), h = Math.min(c.height, 160);
  const d = c.getContext('2d').getImageData(0, 0, w, h).data;
  let changed = 0;
  for (let i = 0; i < d.length; i += 4) {{
    if (d[i] !== before[i] || d[i + 1] !== before[i + 1]) changed++;
  }}
  return changed;
}}"""

# Rows of "ink" (pixels unlike the terminal background) in the left part of the desktop,
# grouped into bands: one band per line of text. Also how the canvas maps to the page.
JS_TEXT_BANDS = f"""() => {{
  const c = {_CANVAS};
  const w = Math.min(c.width, 400), h = Math.min(c.height, 240);
  const d = c.getContext('2d').getImageData(0, 0, c.width, h).data;
  const bgAt = ((h - 1) * c.width + (c.width - 4)) * 4;  // far right: empty terminal
  const bg = [d[bgAt], d[bgAt + 1], d[bgAt + 2]];
  const bands = [];
  let start = -1;
  for (let y = 2; y < h; y++) {{
    let ink = false;
    for (let x = 4; x < w && !ink; x++) {{  // past xterm's window border
      const i = (y * c.width + x) * 4;
      ink = Math.abs(d[i] - bg[0]) + Math.abs(d[i + 1] - bg[1]) + Math.abs(d[i + 2] - bg[2]) > 90;
    }}
    if (ink && start < 0) start = y;
    if (!ink && start >= 0) {{ bands.push([start, y - 1]); start = -1; }}
  }}
  if (start >= 0) bands.push([start, h - 1]);
  const r = c.getBoundingClientRect();
  return {{bands, left: r.left, top: r.top, sx: r.width / c.width, sy: r.height / c.height,
           width: c.width, height: c.height}};
}}"""


# ---- the X server, read directly -----------------------------------------------------------


@dataclass
class SessionProcs:
    pids: list[int]
    display: str
    xvnc: int | None = None
    """Xvnc's pid: its X socket exists only in its own mount namespace (the sandbox)."""


def _session_processes(session_id: str) -> SessionProcs:
    """The processes carrying the session's marker variable, and the display of its Xvnc."""
    needle = f"{MARKER}={session_id}".encode()
    pids, display, xvnc = [], "", None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle not in environ:
            continue
        pids.append(int(entry.name))
        if argv and argv[0].endswith(b"Xvnc"):
            display = next((a.decode() for a in argv[1:] if re.fullmatch(rb":\d+", a)), "")
            xvnc = int(entry.name)
    return SessionProcs(pids=pids, display=display, xvnc=xvnc)


def _xwd_pixels(procs: SessionProcs) -> tuple[int, int, int, bytes]:
    """The root window of the session's display as (width, height, bytes per line, pixel
    bytes), read by ``xwd`` run in Xvnc's mount namespace (where its X socket is)."""
    xwd = ["xwd", "-root", "-silent", "-display", procs.display]
    dump = subprocess.run(
        ["nsenter", "-t", str(procs.xvnc), "-m", *xwd],
        capture_output=True,
        check=True,
        timeout=20,
    ).stdout
    fields = struct.unpack(">25I", dump[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    bytes_per_line, ncolors = fields[12], fields[19]
    start = header_size + 12 * ncolors
    return width, height, bytes_per_line, dump[start : start + bytes_per_line * height]


def _region(
    pixels: tuple[int, int, int, bytes], rows: int = 160, row_bytes: int = 640 * 4
) -> bytes:
    _w, height, bytes_per_line, data = pixels
    return b"".join(
        data[y * bytes_per_line : y * bytes_per_line + row_bytes] for y in range(min(rows, height))
    )


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait (on pidfds, no polling) for the processes to exit; return those still running."""
    deadline = time.monotonic() + timeout
    alive = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                alive.append(pid)
        finally:
            os.close(fd)
    return alive


# ---- browser helpers -----------------------------------------------------------------------


def _shot(page: Page, name: str, *, full_page: bool = False) -> None:
    page.screenshot(path=SHOTS / f"{name}.png", full_page=full_page)


def _select_line(page: Page, first: list[int], pitch: float, line: int) -> None:
    """Triple-click text line ``line`` (1-based) of the terminal, a few characters in.

    ``first`` is the first line's band of rows and ``pitch`` the line height, both in desktop
    pixels; where that is on the page is measured now (clicks elsewhere may have scrolled).
    """
    page.locator("#viewer-screen canvas").scroll_into_view_if_needed()
    layout = page.evaluate(JS_TEXT_BANDS)
    y = (first[0] + first[1]) / 2 + (line - 1) * pitch
    x = 30
    page.mouse.click(
        layout["left"] + x * layout["sx"], layout["top"] + y * layout["sy"], click_count=3
    )


def _wait_canvas_changed(page: Page, pixels: int = 200) -> None:
    """Until more than ``pixels`` pixels differ from the last ``JS_SNAPSHOT``."""
    page.wait_for_function(
        f"() => ({JS_CHANGED_SINCE_SNAPSHOT})() > {pixels}", timeout=PIXELS_TIMEOUT_MS
    )


def _type_into_session(page: Page, text: str) -> None:
    page.keyboard.type(text, delay=15)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_viewer_streams_xterm(platform: Platform, browser: Browser) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        _run_viewer_flow(page, platform)
    finally:
        context.close()


def _run_viewer_flow(page: Page, platform: Platform) -> None:
    base = platform.base_url
    page.goto(f"{base}/")
    expect(page.get_by_test_id("login-form")).to_be_visible()
    _shot(page, "01-login")
    sign_in(page, base)
    _shot(page, "02-catalog")

    # An unknown session: the viewer says so in words.
    page.goto(f"{base}/#/sessions/does-not-exist")
    expect(page.get_by_test_id("viewer-problem-text")).to_contain_text("does not exist")
    page.goto(f"{base}/#/")

    card = page.locator('[data-testid="template-card"][data-template="xterm"]')
    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/sessions") and r.request.method == "POST"
    ) as created:
        card.get_by_test_id("launch-button").click()
    assert created.value.status == 201, created.value.text()
    session_id = created.value.json()["id"]
    row = page.locator(f'[data-testid="session-row"][data-session-id="{session_id}"]')
    expect(row).to_have_attribute("data-state", "running", timeout=SESSION_TIMEOUT_MS)
    _shot(page, "03-my-sessions")

    # ---- the viewer ----
    row.get_by_test_id("open-button").click()
    expect(page).to_have_url(re.compile(rf"#/sessions/{session_id}$"))
    status = page.get_by_test_id("viewer-status")
    expect(status).to_contain_text("Connected", timeout=CONNECT_TIMEOUT_MS)
    canvas = page.locator("#viewer-screen canvas")
    expect(canvas).to_be_visible()
    page.wait_for_function(f"() => ({JS_NON_UNIFORM})() > 50", timeout=PIXELS_TIMEOUT_MS)
    _shot(page, "04-viewer-connected")

    procs = _session_processes(session_id)
    assert procs.display, f"no Xvnc with {MARKER}={session_id} found"
    assert len(procs.pids) >= 2, procs  # Xvnc and xterm (and its shell)
    x_before = _region(_xwd_pixels(procs))

    page.evaluate(JS_SNAPSHOT)
    canvas.click()
    _type_into_session(page, "echo streamspace-ok")
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"() => ({JS_CHANGED_SINCE_SNAPSHOT})() > 200", timeout=PIXELS_TIMEOUT_MS
    )
    _shot(page, "05-viewer-typed")
    # The X server's own framebuffer changed too (not only what the browser drew).
    assert _region(_xwd_pixels(procs)) != x_before

    # Lines 1-3: prompt + command, the output, the next prompt (lines 2 and 3 may touch, as
    # the cursor block fills its cell; both first lines start with tall letters, so the first
    # two bands give the line pitch). A triple-click selects the output line in xterm; the
    # selection comes back through the clipboard: the text shows.
    page.wait_for_function(f"() => ({JS_TEXT_BANDS})().bands.length >= 2")
    layout = page.evaluate(JS_TEXT_BANDS)
    bands = layout["bands"]
    pitch = bands[1][0] - bands[0][0]
    assert 8 <= pitch <= 40, layout
    _select_line(page, bands[0], pitch, 2)
    from_session = page.get_by_test_id("clipboard-from-session")
    expect(from_session).to_have_value(
        re.compile(r"^streamspace-ok\s*$"), timeout=PIXELS_TIMEOUT_MS
    )
    _shot(page, "06-viewer-clipboard-from-session", full_page=True)

    # Clipboard into the session: send, then paste into xterm with Shift+Insert.
    page.get_by_test_id("clipboard-to-session").fill("streamspace-paste")
    page.get_by_test_id("clipboard-send").click()
    expect(status).to_contain_text("sent to the session")
    # The viewer gives the desktop the keyboard again (no click: it would select in xterm).
    expect(canvas).to_be_focused()
    page.evaluate(JS_SNAPSHOT)
    _type_into_session(page, "echo pasted-")
    page.keyboard.press("Shift+Insert")
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"() => ({JS_CHANGED_SINCE_SNAPSHOT})() > 200", timeout=PIXELS_TIMEOUT_MS
    )
    _select_line(page, bands[0], pitch, 4)
    expect(from_session).to_have_value(
        re.compile(r"^pasted-streamspace-paste\s*$"), timeout=PIXELS_TIMEOUT_MS
    )
    _shot(page, "07-viewer-clipboard-to-session", full_page=True)

    # Fullscreen and back.
    page.get_by_test_id("fullscreen-button").click()
    page.wait_for_function("() => document.fullscreenElement?.id === 'viewer-stage'")
    _shot(page, "08-viewer-fullscreen")
    page.get_by_test_id("exit-fullscreen-button").click()
    page.wait_for_function("() => document.fullscreenElement === null")

    # Scaled to the window: a narrow window shrinks the desktop to fit.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function(f"() => {_CANVAS}.getBoundingClientRect().width <= 390")
    _shot(page, "09-viewer-narrow", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    # Disconnect and reconnect (a new one-time token each time).
    page.get_by_test_id("disconnect-button").click()
    problem = page.get_by_test_id("viewer-problem-text")
    expect(problem).to_have_text("You disconnected from the session.")
    expect(canvas).to_have_count(0)
    _shot(page, "10-viewer-disconnected")
    page.get_by_test_id("reconnect-button").click()
    expect(status).to_contain_text("Connected", timeout=CONNECT_TIMEOUT_MS)
    page.wait_for_function(f"() => ({JS_NON_UNIFORM})() > 50", timeout=PIXELS_TIMEOUT_MS)

    # The tunnel's close codes are shown in words (socket answered by the test, not the server).
    _check_close_message(page, f"{base}/#/sessions/{session_id}")

    # ---- admin pages ----
    page.get_by_test_id("nav-agents").click()
    agent = page.get_by_test_id("agent-row").first
    expect(agent).to_have_attribute("data-status", "online")
    # The count comes with the agent's next heartbeat (every 10 s), not at launch.
    expect(agent.get_by_test_id("agent-sessions")).to_have_text(
        re.compile(r"^1 / \d+$"), timeout=HEARTBEAT_TIMEOUT_MS
    )
    expect(agent.get_by_test_id("agent-heartbeat")).to_contain_text("ago")
    _shot(page, "12-admin-agents")

    page.get_by_test_id("nav-all-sessions").click()
    all_row = page.locator(f'[data-testid="all-session-row"][data-session-id="{session_id}"]')
    expect(all_row.get_by_test_id("session-owner")).to_have_text(ADMIN_USER)
    expect(all_row).to_have_attribute("data-state", "running")
    _shot(page, "13-admin-sessions")

    # ---- stop from the UI; the processes are gone ----
    page.get_by_test_id("nav-home").click()
    row.get_by_test_id("stop-button").click()
    expect(row).to_have_attribute("data-state", "terminated", timeout=SESSION_TIMEOUT_MS)
    still_running = _wait_gone(procs.pids, PROCESS_EXIT_TIMEOUT_S)
    assert not still_running, f"session processes still running: {still_running}"
    assert not _session_processes(session_id).pids
    _shot(page, "14-stopped")

    # The viewer of a stopped session explains it.
    page.goto(f"{base}/#/sessions/{session_id}")
    expect(page.get_by_test_id("viewer-problem-text")).to_contain_text("not running")
    expect(page.get_by_test_id("viewer-state")).to_have_text("terminated")
    _shot(page, "15-viewer-not-running")

    # Command history: the start and the stop, both completed.
    page.goto(f"{base}/#/admin/sessions")
    all_row.get_by_test_id("commands-link").click()
    commands = page.get_by_test_id("command-row")
    expect(commands).to_have_count(2)
    expect(commands.nth(0)).to_have_attribute("data-action", "start_session")
    expect(commands.nth(1)).to_have_attribute("data-action", "stop_session")
    for i in range(2):
        expect(commands.nth(i)).to_have_attribute("data-status", "completed")
    _shot(page, "16-admin-command-history")
    page.set_viewport_size({"width": 390, "height": 844})
    _shot(page, "17-admin-command-history-narrow", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    # Revoke and re-approve the agent with the buttons.
    page.get_by_test_id("nav-agents").click()
    page.once("dialog", lambda dialog: dialog.accept())
    agent.get_by_test_id("revoke-button").click()
    expect(agent).to_have_attribute("data-approval", "revoked")
    _shot(page, "18-admin-agent-revoked")
    agent.get_by_test_id("approve-button").click()
    expect(agent).to_have_attribute("data-approval", "approved")

    # The audit log: what was just done, by whom; filtered by action and by target.
    page.get_by_test_id("nav-audit").click()
    events = page.get_by_test_id("audit-row")
    expect(events.first).to_have_attribute("data-action", "agent.approve")
    expect(events.first).to_have_attribute("data-actor", ADMIN_USER)
    expect(page.locator('[data-testid="audit-row"][data-action="session.launch"]')).to_have_count(1)
    page.get_by_test_id("audit-action").fill("agent.*")
    page.get_by_test_id("audit-apply").click()
    expect(page.locator('[data-testid="audit-row"][data-action="agent.revoke"]')).to_have_count(1)
    expect(page.locator('[data-testid="audit-row"][data-action^="session."]')).to_have_count(0)
    page.get_by_test_id("audit-action").fill("")
    page.get_by_test_id("audit-target-id").fill(session_id)
    page.get_by_test_id("audit-apply").click()
    expect(page.locator('[data-testid="audit-row"][data-action="session.stop"]')).to_have_count(1)
    expect(page.locator('[data-testid="audit-row"][data-action="agent.approve"]')).to_have_count(0)
    expect(
        page.locator('[data-testid="audit-row"][data-action="session.transition"]').first
    ).to_be_visible()
    _shot(page, "19-admin-audit")


def _check_close_message(page: Page, viewer_url: str) -> None:
    """A second tab whose connect answer carries a forged token: the server closes the tunnel
    with 4401, and the viewer says why in words."""
    other = page.context.new_page()
    try:
        session_id = viewer_url.rsplit("/", 1)[1]
        forged = {
            "token": "forged",
            "expires_in": 60,
            "url": f"/api/v1/sessions/{session_id}/vnc?token=forged",
        }
        other.route(
            re.compile(r"/api/v1/sessions/[^/]+/connect$"),
            lambda route: route.fulfill(status=200, json=forged),
        )
        other.goto(viewer_url)
        problem = other.get_by_test_id("viewer-problem-text")
        expect(problem).to_contain_text("token was refused", timeout=CONNECT_TIMEOUT_MS)
        expect(other.get_by_test_id("reconnect-button")).to_be_visible()
        other.screenshot(path=SHOTS / "11-viewer-close-reason.png")
    finally:
        other.close()


# ---- noVNC missing: a clear page, not a bare 404 ---------------------------------------------


def _web_client() -> httpx.AsyncClient:
    app = FastAPI()
    pages.mount_web(app)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web")


async def test_novnc_missing_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pages.NOVNC_ENV, str(tmp_path / "nowhere"))
    async with _web_client() as client:
        resp = await client.get("/vendor/novnc/core/rfb.js")
        assert resp.status_code == 503
        assert "noVNC" in resp.text and "npm ci" in resp.text
        assert str(tmp_path / "nowhere") in resp.text
        assert (await client.get("/")).status_code == 200


async def test_novnc_served_from_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "rfb.js").write_text("export default class RFB {}\n")
    monkeypatch.setenv(pages.NOVNC_ENV, str(tmp_path))
    async with _web_client() as client:
        resp = await client.get("/vendor/novnc/core/rfb.js")
        assert resp.status_code == 200
        assert "javascript" in resp.headers["content-type"]
        assert (await client.get("/vendor/novnc/core/missing.js")).status_code == 404
        assert (await client.get("/vendor/novnc/../../etc/passwd")).status_code == 404


def test_novnc_installed_by_npm() -> None:
    """The real noVNC from ``npm ci`` is where the server looks by default."""
    assert pages.novnc_problem(pages.REPO_ROOT / "node_modules" / "@novnc" / "novnc") is None
