"""deploy/kubernetes: every overlay renders with kustomize, is valid for Kubernetes 1.30+
(strict: no unknown fields), passes checkov's Kubernetes checks (each skip justified next
to it), and carries the names of the multi-pod report and the settings of config.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from streamspace.config import AgentSettings, ApiSettings
from tests.deploy.manifests import (
    KUBE_VERSIONS,
    KUSTOMIZE_ROOT,
    OVERLAYS,
    Obj,
    Rendered,
    checkov,
    container,
    env,
    pod_labels,
    render,
    run,
    selects,
    validate,
)


@pytest.fixture(scope="module")
def rendered_text() -> dict[str, str]:
    return {overlay: render(KUSTOMIZE_ROOT / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def rendered(rendered_text: dict[str, str]) -> dict[str, Rendered]:
    return {overlay: Rendered.parse(text) for overlay, text in rendered_text.items()}


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_the_overlays_are_k3s_and_production() -> None:
    assert set(OVERLAYS) >= {"k3s", "production"}


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_kubernetes(
    overlay: str, version: str, rendered_text: dict[str, str], tmp_path: Path
) -> None:
    done = validate(_write(tmp_path, f"{overlay}.yaml", rendered_text[overlay]), version)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARN" not in done.stdout + done.stderr
    kinds = {line.split("resource ")[1].split("/")[0] for line in done.stdout.splitlines()}
    assert {"deployment", "statefulset", "networkpolicy", "role", "ingress"} <= kinds


def test_strict_validation_refuses_a_misspelt_field(
    rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    objects = rendered["k3s"].objects
    api = next(o for o in objects if o["metadata"]["name"] == "streamspace-api")
    api["spec"]["replica"] = 3  # meant: replicas
    done = validate(_write(tmp_path, "typo.yaml", yaml.safe_dump_all(objects)), KUBE_VERSIONS[0])
    assert done.returncode != 0
    assert "replica" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def checkov_results(
    rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Obj]:
    """One checkov run over every overlay plus a copy of k3s with a privileged API container
    (which must fail, or the scan proves nothing)."""
    directory = tmp_path_factory.mktemp("checkov")
    files = {name: _write(directory, f"{name}.yaml", text) for name, text in rendered_text.items()}
    insecure = rendered_text["k3s"].replace(
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true\n          privileged: true",
    )
    files["insecure"] = _write(directory, "insecure.yaml", insecure)
    results = checkov(files.values(), cwd=directory)
    return {name: results[path] for name, path in files.items()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_kubernetes_checks_pass(overlay: str, checkov_results: dict[str, Obj]) -> None:
    result = checkov_results[overlay]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in result["failed"]]
    assert failed == []
    assert len(result["passed"]) > 300


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_skipped_check_says_why(overlay: str, checkov_results: dict[str, Obj]) -> None:
    skipped = checkov_results[overlay]["skipped"]
    assert skipped, "the skips are annotations; none found means they are not read"
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason.split()) >= 5, f"{check['check_id']} on {check['resource']}: {reason!r}"


def test_checkov_fails_a_privileged_container(checkov_results: dict[str, Obj]) -> None:
    failed = {c["check_id"] for c in checkov_results["insecure"]["failed"]}
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= failed  # privileged; privilege escalation


def test_seed_redis_names(rendered: dict[str, Rendered]) -> None:
    k3s = rendered["k3s"]
    redis = k3s.get("Deployment", "streamspace-redis")
    assert pod_labels(redis)["component"] == "redis"
    service = k3s.get("Service", "streamspace-redis")
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]
    assert selects(service["spec"]["selector"], pod_labels(redis))
    assert (KUSTOMIZE_ROOT / "base" / "redis-deployment.yaml").exists()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_deployment_runs_multi_pod_as_the_seed(
    overlay: str, rendered: dict[str, Rendered]
) -> None:
    objects = rendered[overlay]
    api = objects.get("Deployment", "streamspace-api")
    assert api["spec"]["replicas"] == 2
    assert pod_labels(api)["app.kubernetes.io/component"] == "api"
    variables = env(api, "api")
    assert variables["AGENTHUB_REDIS_ENABLED"]["value"] == "true"
    assert variables["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # INTERNAL_URL expands POD_IP, which must come from the pod IP and be defined before it.
    names = list(variables)
    assert variables["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert variables["INTERNAL_URL"]["value"] == "http://$(POD_IP):8080"
    assert names.index("POD_IP") < names.index("INTERNAL_URL")
    for name in ("INTERNAL_SECRET", "DATABASE_URL"):
        assert "secretKeyRef" in variables[name]["valueFrom"], name
    api_container = container(api, "api")
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api_container["args"][:1] == ["api"]
    budget = objects.get("PodDisruptionBudget", "streamspace-api")
    assert selects(budget["spec"]["selector"]["matchLabels"], pod_labels(api))
    service = objects.get("Service", "streamspace-api")
    assert selects(service["spec"]["selector"], pod_labels(api))


def test_k3s_api_uses_the_seed_redis_service(rendered: dict[str, Rendered]) -> None:
    variables = env(rendered["k3s"].get("Deployment", "streamspace-api"), "api")
    assert variables["REDIS_HOST"]["value"] == "streamspace-redis"
    assert variables["REDIS_PORT"]["value"] == "6379"


def test_production_redis_is_sentinel(rendered: dict[str, Rendered]) -> None:
    production = rendered["production"]
    single = [o["kind"] for o in production.objects if o["metadata"]["name"] == "streamspace-redis"]
    assert single == ["NetworkPolicy"]  # the single Redis's Deployment and Service are gone
    nodes = production.get("StatefulSet", "streamspace-redis-node")
    assert pod_labels(nodes)["component"] == "redis"
    variables = env(production.get("Deployment", "streamspace-api"), "api")
    assert "REDIS_HOST" not in variables
    sentinels = variables["REDIS_SENTINELS"]["value"].split(",")
    service = nodes["spec"]["serviceName"]
    expected = [
        f"streamspace-redis-node-{i}.{service}:26379" for i in range(nodes["spec"]["replicas"])
    ]
    assert sentinels == expected
    assert variables["REDIS_SENTINEL_MASTER"]["value"] == "mymaster"
    script = (KUSTOMIZE_ROOT / "components" / "redis-sentinel" / "redis-sentinel.sh").read_text()
    assert "sentinel monitor mymaster" in script
    syntax = run("sh", "-n", str(KUSTOMIZE_ROOT / "components/redis-sentinel/redis-sentinel.sh"))
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_statefulset_keeps_its_data(overlay: str, rendered: dict[str, Rendered]) -> None:
    postgres = rendered[overlay].get("StatefulSet", "streamspace-postgres")
    claims = [c["metadata"]["name"] for c in postgres["spec"]["volumeClaimTemplates"]]
    mounts = {m["name"] for m in container(postgres, "postgres")["volumeMounts"]}
    assert claims == ["data"]
    assert "data" in mounts
    assert "secretKeyRef" in env(postgres, "postgres")["POSTGRES_PASSWORD"]["valueFrom"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_agent_deployment(overlay: str, rendered: dict[str, Rendered]) -> None:
    objects = rendered[overlay]
    agent = objects.get("Deployment", "streamspace-k8s-agent")
    assert agent["spec"]["replicas"] == 2
    assert container(agent, "agent")["args"] == ["agent", "--platform", "kubernetes"]
    variables = env(agent, "agent")
    assert variables["AGENT_ID"]["value"] == "k8s-prod-cluster"
    assert variables["LEADER_ELECTION"]["value"] == "kubernetes"
    assert variables["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "secretKeyRef" in variables["AGENT_API_KEY"]["valueFrom"]
    # CONTROL_PLANE_URL reaches the API Service on its port.
    url = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", variables["CONTROL_PLANE_URL"]["value"])
    assert url
    service = objects.get("Service", url.group(1))
    assert int(url.group(2)) in [p["port"] for p in service["spec"]["ports"]]
    assert selects(
        service["spec"]["selector"], pod_labels(objects.get("Deployment", "streamspace-api"))
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_role_is_what_the_platform_needs(overlay: str, rendered: dict[str, Rendered]) -> None:
    objects = rendered[overlay]
    role = objects.get("Role", "streamspace-k8s-agent")
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    crud = {"get", "list", "watch", "create", "update", "patch", "delete"}
    assert verbs == {
        ("apps", "deployments"): crud,
        ("apps", "deployments/scale"): {"get", "update", "patch"},
        ("", "services"): crud,
        ("", "persistentvolumeclaims"): crud,
        ("", "pods"): {"get", "list", "watch"},
        ("", "events"): {"get", "list", "watch"},
        # The multi-pod report's "leases permission for K8s agent".
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    }
    binding = objects.get("RoleBinding", "streamspace-k8s-agent")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = objects.get("Deployment", "streamspace-k8s-agent")["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["serviceAccountName"],
            "namespace": "streamspace",
        }
    ]
    assert not objects.of_kind("ClusterRole")


def _sources(policy: Obj, objects: Rendered) -> set[str]:
    """The components whose pods a NetworkPolicy admits (over any port)."""
    admitted = set()
    for rule in policy["spec"].get("ingress", []):
        for peer in rule.get("from", []):
            for workload in objects.workloads():
                if selects(peer["podSelector"]["matchLabels"], pod_labels(workload)):
                    admitted.add(pod_labels(workload)["app.kubernetes.io/component"])
    return admitted


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay: str, rendered: dict[str, Rendered]) -> None:
    objects = rendered[overlay]
    policies = {p["metadata"]["name"]: p for p in objects.of_kind("NetworkPolicy")}
    sessions = policies["streamspace-sessions"]
    # The labels the Kubernetes platform puts on session pods.
    assert selects(sessions["spec"]["podSelector"]["matchLabels"], {"app": "streamspace-session"})
    assert _sources(sessions, objects) == {"agent"}
    assert _sources(policies["streamspace-postgres"], objects) == {"api"}
    redis_peers = {"k3s": {"api"}, "production": {"api", "redis"}}  # Sentinel talks to itself
    assert _sources(policies["streamspace-redis"], objects) == redis_peers.get(overlay, {"api"})
    assert policies["streamspace-k8s-agent"]["spec"]["ingress"] == []
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    # Every workload but the API (the public entry) is behind a policy, and no rule of
    # those admits everyone.
    for workload in objects.workloads():
        if pod_labels(workload)["app.kubernetes.io/component"] == "api":
            continue
        labels = pod_labels(workload)
        covering = [
            p for p in policies.values() if selects(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert covering, f"{workload['metadata']['name']} has no NetworkPolicy"
        assert all(rule.get("from") for p in covering for rule in p["spec"]["ingress"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_names_are_settings(overlay: str, rendered: dict[str, Rendered]) -> None:
    api_names = {name.upper() for name in ApiSettings.model_fields} | {"POD_IP"}
    agent_names = {name.upper() for name in AgentSettings.model_fields}
    objects = rendered[overlay]
    api = set(env(objects.get("Deployment", "streamspace-api"), "api"))
    agent = set(env(objects.get("Deployment", "streamspace-k8s-agent"), "agent"))
    assert api - api_names == set()
    assert agent - agent_names == set()
    # ... and each is in the configuration reference (POD_IP only builds INTERNAL_URL).
    table = (KUSTOMIZE_ROOT.parents[1] / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)?", table, re.M))
    documented_names = {name for row in documented for name in row if name}
    undocumented = (api | agent) - documented_names - {"POD_IP"}
    assert undocumented == set()


def _secret_refs(objects: Rendered) -> set[tuple[str, str]]:
    refs = set()
    for workload in objects.workloads():
        for each in workload["spec"]["template"]["spec"]["containers"]:
            for var in each.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    return refs


def test_secrets_are_made_in_the_cluster_not_committed(rendered: dict[str, Rendered]) -> None:
    script = KUSTOMIZE_ROOT / "create-secrets.sh"
    first, second = (run("sh", str(script)) for _ in range(2))
    assert first.returncode == 0, first.stderr
    made = {s["metadata"]["name"]: s["stringData"] for s in yaml.safe_load_all(first.stdout)}
    again = {s["metadata"]["name"]: s["stringData"] for s in yaml.safe_load_all(second.stdout)}
    provided = {(name, key) for name, data in made.items() for key in data}
    provided.add(("streamspace-agent", "AGENT_API_KEY"))  # made after registering the agent
    docs = (KUSTOMIZE_ROOT.parents[1] / "docs" / "kubernetes.md").read_text()
    assert "create secret generic streamspace-agent" in docs
    assert "--from-literal=AGENT_API_KEY=" in docs
    for overlay, objects in rendered.items():
        assert not objects.of_kind("Secret"), overlay
        assert _secret_refs(objects) <= provided, overlay
    # Fresh random values on each run; the API's DATABASE_URL carries PostgreSQL's password.
    for name, data in made.items():
        for key, value in data.items():
            assert value != again[name][key], f"{name}/{key} is not random"
    postgres = made["streamspace-postgres"]
    assert (
        f":{postgres['POSTGRES_PASSWORD']}@streamspace-postgres:5432/" in postgres["DATABASE_URL"]
    )


_KUBECTL_OBJECT = re.compile(
    r"kubectl -n streamspace (?:exec|logs|scale|rollout status|port-forward|get)"
    r"(?: [a-z]+)? ((?:deployment|statefulset|service)/[a-z0-9-]+)"
)
_KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet", "service": "Service"}


def test_the_documented_commands_name_rendered_objects(rendered: dict[str, Rendered]) -> None:
    docs = KUSTOMIZE_ROOT.parents[1] / "docs" / "kubernetes.md"
    readme = KUSTOMIZE_ROOT.parents[1] / "README.md"
    named = {m for path in (docs, readme) for m in _KUBECTL_OBJECT.findall(path.read_text())}
    assert {"deployment/streamspace-redis", "deployment/streamspace-api"} <= named
    for reference in named:
        kind, name = reference.split("/")
        rendered["k3s"].get(_KINDS[kind], name)
    forwarded = re.search(r"port-forward service/streamspace-api (\d+):(\d+)", docs.read_text())
    assert forwarded
    service = rendered["k3s"].get("Service", "streamspace-api")
    assert int(forwarded.group(2)) in [p["port"] for p in service["spec"]["ports"]]


def _container_environment(variables: dict[str, Obj], values: dict[str, str]) -> dict[str, str]:
    """The environment the kubelet would give: ``values`` for valueFrom entries, and
    ``$(NAME)`` expanded from the variables defined before (as Kubernetes does)."""
    environment: dict[str, str] = {}
    for name, var in variables.items():
        if "valueFrom" in var:
            environment[name] = values[name]
        else:
            environment[name] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: environment.get(m.group(1), m.group(0)),
                var["value"],
            )
    return environment


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_environment_is_accepted_by_the_settings(
    overlay: str, rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "DATABASE_URL": "postgresql://streamspace:pw@streamspace-postgres:5432/streamspace",
        "INTERNAL_SECRET": "s",
        "AGENT_BOOTSTRAP_KEY": "b",
        "STREAMSPACE_ADMIN_PASSWORD": "a",
        "POD_NAME": "streamspace-api-7cb94c5d8f-tgtl6",
        "POD_IP": "10.42.0.7",
    }
    variables = env(rendered[overlay].get("Deployment", "streamspace-api"), "api")
    for name, value in _container_environment(variables, secrets).items():
        monkeypatch.setenv(name, value)
    settings = ApiSettings()
    assert settings.agenthub_redis_enabled
    assert settings.pod_name == "streamspace-api-7cb94c5d8f-tgtl6"
    assert settings.advertised_url == "http://10.42.0.7:8080"
    assert settings.redis_db == 1  # the report's `redis-cli -n 1`
    assert not settings.is_sqlite
    assert settings.redis_host == "streamspace-redis" or settings.redis_sentinels


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_keeps_websockets_open(overlay: str, rendered: dict[str, Rendered]) -> None:
    objects = rendered[overlay]
    ingress = objects.get("Ingress", "streamspace")
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    expected_class = {"k3s": "traefik"}.get(overlay, "nginx")
    assert ingress["spec"]["ingressClassName"] == expected_class
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/"
    backend = path["backend"]["service"]
    service = objects.get("Service", backend["name"])
    assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
