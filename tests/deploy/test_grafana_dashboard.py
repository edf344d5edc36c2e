"""deploy/grafana/streamspace.json: a Grafana dashboard that reads only metrics the control
plane exports, shows every one of them, and is importable (unique panel ids, one Prometheus
data-source variable that every query uses)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, generate_latest

from streamspace.controlplane import metrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "streamspace.json"
_METRIC = re.compile(r"\bstreamspace_[a-z_]+")
_HISTOGRAM_SAMPLES = ("_bucket", "_sum", "_count")


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _queries(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _exported() -> set[str]:
    """The metric names the control plane's exposition declares (``# HELP`` lines)."""
    assert metrics.SESSIONS is not None  # the module registers its metrics on import
    text = generate_latest(REGISTRY).decode()
    declared = {
        line.split()[2] for line in text.splitlines() if line.startswith("# HELP streamspace_")
    }
    return {name for name in declared if not name.endswith("_created")}  # creation times


def _base(name: str) -> str:
    for suffix in _HISTOGRAM_SAMPLES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_query_reads_a_metric_the_control_plane_exports() -> None:
    exported = _exported()
    for query in _queries(_dashboard()):
        used = {_base(name) for name in _METRIC.findall(query["expr"])}
        assert used, query
        assert used <= exported, f"{query['expr']}: {used - exported} not exported"


def test_every_exported_metric_has_a_panel() -> None:
    used = {
        _base(name) for query in _queries(_dashboard()) for name in _METRIC.findall(query["expr"])
    }
    assert _exported() <= used, f"no panel shows {_exported() - used}"


def test_the_dashboard_is_importable() -> None:
    dashboard = _dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    for query in _queries(dashboard):
        assert query["datasource"]["uid"] == "${datasource}"
