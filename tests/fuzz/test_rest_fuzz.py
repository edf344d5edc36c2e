"""Hostile input as a test tier: schemathesis fuzzes a real ``streamspace api`` from its own
OpenAPI description, as an administrator and anonymously.

Every check but one is on (use_after_free: a stopped session stays readable): no 5xx
(except the documented 503 of a launch no agent can take), every status code, content type,
header and body as documented, invalid input refused, valid input accepted. Each run has a
time budget and the two identities fuzz side by side, so the tier takes about one minute.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_for_agent
from tests.processes import VENV_BIN, AgentProcess, ApiProcess

CONFIG = Path(__file__).with_name("schemathesis.toml")
BUDGET = 50
"""Seconds of fuzzing per identity."""


async def fuzz(api: ApiProcess, directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``st run`` against ``api`` with extra ``options`` (in a thread: runs go side by side)."""
    argv = [str(VENV_BIN / "st"), "--config-file", str(CONFIG), "run", f"{api.url}/openapi.json"]
    argv += [
        *options,
        "--checks=all",
        # DELETE /api/v1/sessions/{id} stops a session, which stays readable (`stopping`,
        # then `terminated`, with its events) by design: reading it afterwards is no
        # use-after-free. A deleted template's 404 is tested in tests/integration.
        "--exclude-checks=use_after_free",
        f"--max-time={BUDGET}",
        "--max-examples=200",
        # One worker: hypothesis describes strategies with ast.parse, which races between
        # threads on Python 3.11 ("AST constructor recursion depth mismatch").
        "--workers=1",
        "--request-timeout=10",
        "--no-color",
        "--output-truncate=false",
    ]
    directory.mkdir(parents=True, exist_ok=True)
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=BUDGET * 3,
        check=False,
    )


@pytest.mark.timeout(300)
async def test_fuzzed_api_answers_as_documented(
    api: ApiProcess, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    # An agent online (a fake platform), so launches succeed and sessions exist to be
    # stopped, hibernated and viewed; the fuzz may revoke it or exhaust its capacity.
    agent = AgentProcess(tmp_path / "agent", control_plane_url=api.url, agent_id="fuzz-agent")
    agent.start()
    await wait_for_agent(admin, "fuzz-agent")
    token = admin.headers["Authorization"]
    # Logging out would end the administrator's token half way through the run.
    # Both identities at once, each in a directory of its own: one budget of wall time.
    as_admin, anonymous = await asyncio.gather(
        fuzz(
            api,
            tmp_path / "admin",
            f"--header=Authorization: {token}",
            "--exclude-path=/api/v1/auth/logout",
        ),
        fuzz(api, tmp_path / "anonymous"),
    )
    assert as_admin.returncode == 0, as_admin.stdout[-20000:] + as_admin.stderr[-3000:]
    assert anonymous.returncode == 0, anonymous.stdout[-20000:] + anonymous.stderr[-3000:]
    assert "Traceback" not in api.output(), api.output()[-5000:]
