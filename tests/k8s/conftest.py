"""The ``kube`` fixture: a Kubernetes API emulator (:mod:`tests.k8s.emulator`) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.emulator import KubeEmulator, running_emulator


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeEmulator]:
    """A started emulator whose kubeconfig is ``tmp_path / "kubeconfig"`` (``.kubeconfig_path``)."""
    with running_emulator(tmp_path) as emulator:
        yield emulator
