"""Rendering and scanning deploy/kubernetes with the real tools (kubectl's kustomize,
kubernetes-validate, checkov), and reading the rendered objects."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE_ROOT = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUSTOMIZE_ROOT / "overlays").iterdir() if p.is_dir())
KUBE_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes the manifests support, and the newest kubernetes-validate knows."""
_BIN = Path(sys.executable).parent
CHECKOV = REPO / ".venv-tools" / "bin" / "checkov"

Obj = dict[str, Any]


def tool(path: Path) -> str:
    """The tool's path, or a failure that says how to install it."""
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash scripts/install-deps.sh test`")
    return str(path)


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


def render(directory: Path) -> str:
    """``kubectl kustomize DIR`` (offline): the YAML an apply of that directory sends."""
    done = run(tool(_BIN / "kubectl"), "kustomize", str(directory))
    assert done.returncode == 0, done.stderr
    return done.stdout


def validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    """``kubernetes-validate --strict`` against one Kubernetes version."""
    return run(tool(_BIN / "kubernetes-validate"), "--strict", "-k", version, str(path))


def checkov(paths: Iterable[Path], *, cwd: Path) -> dict[Path, Obj]:
    """One checkov run (Kubernetes checks, offline) over ``paths``: its results per file."""
    argv = [tool(CHECKOV), "--framework", "kubernetes", "--skip-download", "-o", "json"]
    paths = list(paths)
    for path in paths:
        argv += ["-f", str(path)]
    done = run(*argv, cwd=cwd)
    # Exit 1 means "checks failed": the report says which; anything else is a broken run.
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    results: dict[Path, Obj] = {path: {"passed": [], "failed": [], "skipped": []} for path in paths}
    for part in reports:
        for outcome in ("passed", "failed", "skipped"):
            for check in part["results"][f"{outcome}_checks"]:
                results[cwd / check["file_path"].lstrip("/")][outcome].append(check)
    return results


@dataclass(frozen=True)
class Rendered:
    """The objects of one rendered overlay."""

    objects: list[Obj]

    @classmethod
    def parse(cls, text: str) -> Rendered:
        return cls([obj for obj in yaml.safe_load_all(text) if obj])

    def get(self, kind: str, name: str) -> Obj:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def workloads(self) -> Iterator[Obj]:
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "StatefulSet"):
                yield obj


def container(workload: Obj, name: str) -> Obj:
    found = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"container {name}: {len(found)} found"
    return found[0]


def env(workload: Obj, name: str) -> dict[str, Obj]:
    """A container's environment, by variable name (each entry as written)."""
    return {var["name"]: var for var in container(workload, name).get("env", [])}


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether an equality selector (``matchLabels``) matches ``labels``."""
    return all(labels.get(key) == value for key, value in selector.items())
