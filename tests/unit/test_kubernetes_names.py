"""Names and label values of the kubernetes platform's objects are valid for the API server
whatever the session, user and template names are, and two names never collide."""

from __future__ import annotations

import re

import pytest

from streamspace.agent.platforms.kubernetes.platform import (
    home_claim,
    label_value,
    object_name,
    session_claim,
)

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

AWKWARD = ["Abc_DEF:1", "abc-def-1", "a" * 128, "X.y-Z_9", "0" + ":" * 127]


def test_a_uuid_session_keeps_its_name() -> None:
    sid = "0b9f3c1e-8a2d-4f6b-9c7e-1d2e3f4a5b6c"
    assert object_name(sid) == f"streamspace-{sid}"
    assert session_claim(sid) == f"streamspace-home-{sid}"
    assert label_value(sid) == sid


@pytest.mark.parametrize("raw", AWKWARD)
def test_any_session_id_makes_valid_dns_labels(raw: str) -> None:
    for name in (object_name(raw), session_claim(raw)):
        assert DNS_LABEL.match(name) and len(name) <= 63, name


def test_names_that_need_changing_do_not_collide() -> None:
    assert len({object_name(raw) for raw in AWKWARD}) == len(AWKWARD)
    assert len({label_value(raw) for raw in AWKWARD}) == len(AWKWARD)
    assert label_value("Ann Lee@corp") != label_value("Ann_Lee_corp")


@pytest.mark.parametrize("raw", [*AWKWARD, "Ann Lee@corp", "_lead", "trail.", "ünï", "-"])
def test_any_name_makes_a_valid_label_value(raw: str) -> None:
    value = label_value(raw)
    assert LABEL_VALUE.match(value) and len(value) <= 63, value


def test_home_claims_are_per_user_and_template() -> None:
    claims = {home_claim(u, t) for u in ("alice", "Alice", "a" * 128) for t in ("xterm", "x/y")}
    assert len(claims) == 6
    assert all(DNS_LABEL.match(c) and len(c) <= 63 for c in claims), claims
