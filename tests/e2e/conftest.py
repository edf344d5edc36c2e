"""Fixtures of the browser tests: a running platform and a headless browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.e2e.harness import Platform, headless_chromium, running_platform


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    with running_platform(tmp_path) as started:
        yield started


@pytest.fixture
def browser() -> Iterator[Browser]:
    with headless_chromium() as started:
        yield started
