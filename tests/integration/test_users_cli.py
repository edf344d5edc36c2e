"""``streamspace users …`` and ``streamspace tokens …`` as an operator runs them, on the
database a replica uses: the same rules and effects as the REST API."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from tests.helpers import eventually, login
from tests.integration.test_cli import STREAMSPACE, clean_env, run
from tests.processes import ApiProcess


def ok(*args: str, env: dict[str, str]) -> str:
    done = run(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def refused(*args: str, env: dict[str, str]) -> str:
    done = run(*args, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_the_user_commands(tmp_path: Path) -> None:
    """Each command once (each pays a process start and a migration check); the rules
    behind them are the service's, tested in tests/unit/core/test_users.py."""
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'u.db'}")
    ok("users", "create", "root", "--role", "admin", "--password", "root-password", env=env)
    made = ok("users", "create", "alice", "--generate", env=env)
    assert re.search(r"temporary password \(shown once.*\): \S{16,}", made), made
    listed = ok("users", "list", env=env)
    assert re.search(r"^alice\tuser\tmust change password\t", listed, re.M), listed
    assert re.search(r"^root\tadmin\tenabled\t", listed, re.M), listed

    assert "last enabled administrator" in refused("users", "disable", "root", env=env)
    ok("users", "set-role", "alice", "admin", env=env)
    ok("users", "disable", "root", env=env)  # alice is an administrator now
    assert re.search(r"^root\tadmin\tdisabled\t", ok("users", "list", "--search", "ROO", env=env))
    ok("users", "enable", "root", env=env)
    reset = ok("users", "reset-password", "alice", env=env)
    assert re.search(r"temporary password \(shown once\): \S{16,}", reset), reset

    token_id, secret = ok(
        "tokens", "create", "--user", "alice", "--name", "backup", env=env
    ).split()
    assert secret.startswith("ssp_")
    ok("tokens", "revoke", "--user", "alice", token_id, env=env)
    listed = ok("tokens", "list", "--user", "alice", env=env)
    assert token_id in listed and "backup" in listed and "revoked" in listed
    assert secret not in listed

    aborted = subprocess.run(  # without --yes it asks; "n" keeps the user
        [STREAMSPACE, "users", "delete", "alice"],
        input="n\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert aborted.returncode == 1, aborted.stdout + aborted.stderr
    ok("users", "delete", "alice", "--yes", env=env)
    assert "alice" not in ok("users", "list", env=env)


async def test_a_disable_from_the_command_line_reaches_a_running_replica(
    api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    """Without Redis the replica hears nothing: its cache lets the token go for at most 5 s."""
    env = clean_env(DATABASE_URL=api.env["DATABASE_URL"])
    ok("users", "create", "erin", "--password", "erin-password", env=env)
    erin = await login(api.url, "erin", "erin-password")
    try:
        assert (await erin.get("/api/v1/auth/me")).status_code == 200
        ok("users", "disable", "erin", env=env)

        async def refused_now() -> bool:
            return (await erin.get("/api/v1/auth/me")).status_code == 401

        await eventually(refused_now, timeout=8, message="erin's token refused")
    finally:
        await erin.aclose()
    assert (await admin.get("/api/v1/users/erin")).json()["disabled"] is True
