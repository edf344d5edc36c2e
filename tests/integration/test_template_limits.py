"""A template too large for a command frame is refused with 422 when saved, never sent."""

from __future__ import annotations

import httpx

from streamspace.bounds import MAX_ARG_CHARS, MAX_LAUNCH_BYTES
from tests.processes import ApiProcess


async def test_an_oversized_template_is_refused_in_words_and_not_saved(
    api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    template = {
        "name": "huge",
        "display_name": "Huge",
        "command": ["x" * MAX_ARG_CHARS] * 16,
        "env": {"BIG": "y" * 1024},
    }
    refused = await admin.post("/api/v1/templates", json=template)
    assert refused.status_code == 422, refused.text
    assert f"at most {MAX_LAUNCH_BYTES} allowed" in refused.text
    assert (await admin.get("/api/v1/templates/huge")).status_code == 404

    bad_name = await admin.post(
        "/api/v1/templates", json={**template, "command": [], "env": {"A=B": "c"}}
    )
    assert bad_name.status_code == 422 and "should match pattern" in bad_name.text, bad_name.text

    template["command"] = ["x" * (MAX_LAUNCH_BYTES // 8)] * 4
    saved = await admin.post("/api/v1/templates", json=template)
    assert saved.status_code == 201, saved.text
    replaced = await admin.put("/api/v1/templates/huge", json={**template, "command": ["x"] * 65})
    assert replaced.status_code == 422 and "at most 64 items" in replaced.text, replaced.text
    assert (await admin.get("/api/v1/templates/huge")).json()["command"] == template["command"]
