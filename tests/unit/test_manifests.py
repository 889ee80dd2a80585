"""Static checks of the install manifests: they build, pods pass the restricted Pod
Security Standard, RBAC is least-privilege and explained, images are pinned, and the kind
overlay, kind-config.yaml and the operator's settings agree. No cluster needed; kubectl is
(for `kubectl kustomize`)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from kubeloop.settings import environment_variables
from tests.manifest_tools import ROOT, kustomize, pod_specs, restricted_violations

KUSTOMIZATIONS = (
    "manifests/base",
    "manifests/monitoring",
    "manifests/monitoring/prometheus-operator",
    "manifests/workspace",
    "manifests/overlays/kind",
    "manifests/overlays/kind-objectstore",
    "manifests/overlays/local",
)
RBAC_SOURCES = (
    "manifests/base/rbac/operator-role.yaml",
    "manifests/base/rbac/user-roles.yaml",
    "manifests/monitoring/prometheus/rbac.yaml",
)


def _by(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_builds(path: str) -> None:
    objs = kustomize(path)
    assert objs
    for o in objs:
        assert o.get("apiVersion") and o.get("kind") and o["metadata"].get("name"), o


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_pods_are_restricted(path: str) -> None:
    for where, spec in pod_specs(kustomize(path)):
        assert restricted_violations(spec) == [], where
        # A read-only root filesystem needs somewhere to write: every container has a
        # writable mount (emptyDir) for scratch or data.
        empty = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
        for c in spec["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts") or []}
            assert mounts & empty, f"{where}/{c['name']}: no emptyDir mount"


def test_restricted_check_can_fail() -> None:
    spec = {"containers": [{"name": "c", "securityContext": {"runAsNonRoot": True}}]}
    assert len(restricted_violations(spec)) == 4


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_images_are_pinned(path: str) -> None:
    for where, spec in pod_specs(kustomize(path)):
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            image = c["image"]
            name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
            assert name and tag and tag != "latest" and "/" not in tag, f"{where}: {image}"
            assert c.get("imagePullPolicy") in ("IfNotPresent", "Always"), where


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_rbac_has_no_wildcards_secrets_or_escalation(path: str) -> None:
    for o in kustomize(path):
        if o["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in o.get("rules") or []:
            where = f"{o['metadata']['name']}: {rule}"
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in (rule.get(key) or []), where
            assert not set(rule.get("resources") or []) & {"secrets", "secrets/*"}, where
            assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate"}, where
            assert "nonResourceURLs" not in rule, where


@pytest.mark.parametrize("source", RBAC_SOURCES)
def test_every_rbac_rule_has_a_comment(source: str) -> None:
    lines = (ROOT / source).read_text().splitlines()
    rules = [i for i, line in enumerate(lines) if re.match(r"^\s*- apiGroups:", line)]
    assert rules, source
    for i in rules:
        prev = next(line for line in reversed(lines[:i]) if line.strip())
        assert prev.strip().startswith("#"), f"{source}:{i + 1}: rule without a comment"


def _operator_rules() -> dict[tuple[str, str], set[str]]:
    role = _by(kustomize("manifests/base"), "ClusterRole", "kubeloop-operator")
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                out.setdefault((g, r), set()).update(rule["verbs"])
    return out


def test_operator_role_is_what_the_operator_needs() -> None:
    rules = _operator_rules()
    read = {"get", "list", "watch"}
    for plural in ("trainingjobs", "modelversions", "inferenceservices"):
        assert read | {"patch"} <= rules[("kubeloop.io", plural)]
        assert "patch" in rules[("kubeloop.io", f"{plural}/status")]
        assert "delete" not in rules[("kubeloop.io", plural)]
    assert "create" in rules[("kubeloop.io", "trainingjobs")]  # the closed loop
    assert "create" in rules[("kubeloop.io", "modelversions")]  # the registry
    assert "create" not in rules[("kubeloop.io", "inferenceservices")]
    assert rules[("", "pods")] == read
    assert ("", "pods/status") not in rules
    for key in (
        ("batch", "jobs"),
        ("apps", "deployments"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("policy", "poddisruptionbudgets"),
    ):
        assert read | {"create", "patch", "delete"} <= rules[key], key
    assert read | {"create", "patch"} <= rules[("", "services")]
    assert {"create"} <= rules[("", "events")]
    assert rules[("apiextensions.k8s.io", "customresourcedefinitions")] == read
    assert rules[("", "namespaces")] == {"list", "watch"}
    assert rules[("", "configmaps")] == {"get"}  # a dataset ConfigMap's version (dataChanged)
    # Nothing else: no secrets, nodes, leases...
    allowed_resources = {
        "trainingjobs",
        "modelversions",
        "inferenceservices",
        "trainingjobs/status",
        "modelversions/status",
        "inferenceservices/status",
        "jobs",
        "pods",
        "deployments",
        "services",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
        "events",
        "customresourcedefinitions",
        "namespaces",
        "configmaps",
    }
    assert {r for _, r in rules} <= allowed_resources


def test_leader_election_may_touch_leases_in_the_operator_namespace_only() -> None:
    objs = kustomize("manifests/base")
    role = _by(objs, "Role", "kubeloop-operator-leader-election")
    assert role["metadata"]["namespace"] == "kubeloop-system"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    binding = _by(objs, "RoleBinding", "kubeloop-operator-leader-election")
    assert binding["metadata"]["namespace"] == "kubeloop-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kubeloop-operator-leader-election",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kubeloop-operator", "namespace": "kubeloop-system"}
    ]


def test_operator_binding_targets_its_service_account() -> None:
    objs = kustomize("manifests/base")
    b = _by(objs, "ClusterRoleBinding", "kubeloop-operator")
    assert b["roleRef"]["name"] == "kubeloop-operator"
    assert b["subjects"] == [
        {"kind": "ServiceAccount", "name": "kubeloop-operator", "namespace": "kubeloop-system"}
    ]
    dep = _by(objs, "Deployment", "kubeloop-operator")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "kubeloop-operator"


def test_user_roles_aggregate_into_the_builtin_roles() -> None:
    objs = kustomize("manifests/base")
    for kind in ("trainingjob", "modelversion", "inferenceservice"):
        editor = _by(objs, "ClusterRole", f"kubeloop-{kind}-editor")["metadata"]["labels"]
        viewer = _by(objs, "ClusterRole", f"kubeloop-{kind}-viewer")
        assert editor["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
        assert editor["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
        assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
        for rule in viewer["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}


def _settings_env_names() -> set[str]:
    return set(environment_variables())


def test_operator_deployment() -> None:
    dep = _by(kustomize("manifests/base"), "Deployment", "kubeloop-operator")
    assert dep["metadata"]["namespace"] == "kubeloop-system"
    # Two replicas under leader election; a rolling update never leaves none.
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    tmpl = dep["spec"]["template"]
    ann = tmpl["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8080"
    (c,) = tmpl["spec"]["containers"]
    assert c["image"] == "kubeloop/operator:0.1.0"
    env = {e["name"]: e.get("value") for e in c["env"]}
    downward = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e
    }
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert set(env) - set(downward) <= _settings_env_names(), "env the operator does not read"
    assert env["KUBELOOP_LEADER_ELECTION"] == "true"
    assert env["KUBELOOP_RUNTIME_IMAGE"] == "kubeloop/runtime:0.1.0"
    assert env["KUBELOOP_ARTIFACT_PVC"] == "kubeloop-artifacts"
    assert env["KUBELOOP_LOG_FORMAT"] == "json"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {
        "metrics": int(env["KUBELOOP_METRICS_PORT"]),
        "health": int(env["KUBELOOP_HEALTH_PORT"]),
    }
    probe = c["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and probe["port"] == "health"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


def test_metrics_service_selects_the_operator() -> None:
    objs = kustomize("manifests/base")
    svc = _by(objs, "Service", "kubeloop-operator-metrics")
    dep = _by(objs, "Deployment", "kubeloop-operator")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


def test_namespaces_enforce_restricted() -> None:
    for path, name in (
        ("manifests/base", "kubeloop-system"),
        ("manifests/monitoring", "kubeloop-monitoring"),
    ):
        ns = _by(kustomize(path), "Namespace", name)
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_network_policies() -> None:
    op = _by(kustomize("manifests/base"), "NetworkPolicy", "kubeloop-operator")
    assert set(op["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = op["spec"]["ingress"]
    (src,) = ingress["from"]
    assert src["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kubeloop-monitoring"
    }
    egress_ports = {p["port"] for rule in op["spec"]["egress"] for p in rule["ports"]}
    assert {443, 6443, 8080, 53} <= egress_ports
    ws = kustomize("manifests/workspace")
    pred = _by(ws, "NetworkPolicy", "kubeloop-predictors")
    assert pred["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/component": "predictor"
    }
    train = _by(ws, "NetworkPolicy", "kubeloop-training")
    assert train["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "trainer"}
    assert "ingress" not in train["spec"] and "Ingress" in train["spec"]["policyTypes"]
    train_ports = {p["port"] for rule in train["spec"]["egress"] for p in rule["ports"]}
    assert train_ports == {53, 443}


def test_workspace_has_the_artifact_pvc() -> None:
    pvc = _by(kustomize("manifests/workspace"), "PersistentVolumeClaim", "kubeloop-artifacts")
    assert pvc["metadata"]["namespace"] == "default"


# ------------------------------------------------------------------ kind overlay


def test_kind_overlay_uses_dev_images() -> None:
    objs = kustomize("manifests/overlays/kind")
    dep = _by(objs, "Deployment", "kubeloop-operator")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "kubeloop/operator:dev"
    assert c["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KUBELOOP_RUNTIME_IMAGE"] == "kubeloop/runtime:dev"
    assert env["KUBELOOP_IMAGE_PULL_POLICY"] == "IfNotPresent"
    # The strategic merge kept every other variable.
    base = _by(kustomize("manifests/base"), "Deployment", "kubeloop-operator")
    (bc,) = base["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in bc["env"]} == set(env)
    pvc = _by(objs, "PersistentVolumeClaim", "kubeloop-artifacts")
    assert pvc["metadata"]["namespace"] == "default"
    assert pvc["spec"]["storageClassName"] == "standard"
    kinds = {o["kind"] for o in objs}
    assert {"CustomResourceDefinition", "Deployment", "NetworkPolicy", "ConfigMap"} <= kinds
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"} == {
        "kubeloop-operator",
        "prometheus",
        "grafana",
    }


def test_kind_node_ports_match_kind_config() -> None:
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    (node,) = cfg["nodes"]
    mapped = {m["containerPort"]: m["hostPort"] for m in node["extraPortMappings"]}
    # The kind overlay with the object store (make kind-up OBJECTSTORE=1) uses every one.
    objs = kustomize("manifests/overlays/kind-objectstore")
    node_ports = {
        o["metadata"]["name"]: p["nodePort"]
        for o in objs
        if o["kind"] == "Service"
        for p in o["spec"]["ports"]
        if "nodePort" in p
    }
    assert node_ports == {"prometheus": 30090, "grafana": 30030, "objectstore": 30070}
    assert mapped[node_ports["prometheus"]] == 9090
    assert mapped[node_ports["grafana"]] == 3000
    assert mapped[node_ports["objectstore"]] == 7070
    assert set(mapped) == set(node_ports.values()), "a mapped port no Service uses"


# ------------------------------------------------------------------ monitoring


def test_monitoring_wiring() -> None:
    objs = kustomize("manifests/monitoring")
    cms = {o["metadata"]["name"].rsplit("-", 1)[0]: o for o in objs if o["kind"] == "ConfigMap"}
    dashboards = cms["grafana-dashboards"]["data"]
    on_disk = {p.name for p in (ROOT / "manifests/monitoring/dashboards").glob("*.json")}
    assert set(dashboards) == on_disk
    assert set(cms["prometheus-rules"]["data"]) == {"kubeloop-alerts.yaml"}
    prom = _by(objs, "Deployment", "prometheus")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in prom["volumes"]}
    # configMapGenerator's hashed names were substituted into the Deployments.
    assert volumes["rules"]["configMap"]["name"] == cms["prometheus-rules"]["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == cms["prometheus-config"]["metadata"]["name"]
    cfg = yaml.safe_load(cms["prometheus-config"]["data"]["prometheus.yml"])
    (mount,) = [m for m in prom["containers"][0]["volumeMounts"] if m["name"] == "rules"]
    assert cfg["rule_files"] == [f"{mount['mountPath']}/*.yaml"]
    sa = prom["serviceAccountName"]
    binding = _by(objs, "ClusterRoleBinding", "kubeloop-prometheus")
    assert binding["subjects"][0]["name"] == sa
    graf = _by(objs, "Deployment", "grafana")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in graf["containers"][0]["env"]}
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    ds = yaml.safe_load(cms["grafana-datasources"]["data"]["datasources.yaml"])
    assert ds["datasources"][0]["uid"] == "prometheus"
    assert "prometheus.kubeloop-monitoring.svc:9090" in ds["datasources"][0]["url"]


def test_prometheus_rule_matches_the_alert_file() -> None:
    rule = _by(
        kustomize("manifests/monitoring/prometheus-operator"), "PrometheusRule", "kubeloop-alerts"
    )
    src = yaml.safe_load(
        (ROOT / "manifests/monitoring/prometheus/rules/kubeloop-alerts.yaml").read_text()
    )

    def norm(x: Any) -> Any:
        # Folded and literal YAML strings differ only in whitespace.
        if isinstance(x, str):
            return " ".join(x.split())
        if isinstance(x, list):
            return [norm(v) for v in x]
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        return x

    assert norm(rule["spec"]["groups"]) == norm(src["groups"])


def test_prometheus_operator_monitors_match_the_scrape_config() -> None:
    objs = kustomize("manifests/monitoring/prometheus-operator")
    sm = _by(objs, "ServiceMonitor", "kubeloop-operator")
    svc = _by(kustomize("manifests/base"), "Service", "kubeloop-operator-metrics")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    pm = _by(objs, "PodMonitor", "kubeloop-predictors")
    targets = {r["targetLabel"] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert {"job", "inferenceservice", "role"} <= targets
