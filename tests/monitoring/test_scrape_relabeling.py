"""The scrape jobs' relabeling, applied to pods as Kubernetes discovery describes them.

A small, faithful model of Prometheus's relabeling (anchored regexes, `;`-joined source
labels, keep/drop/replace, $1 expansion, __meta_* labels removed afterwards) runs the real
relabel_configs of manifests/monitoring/prometheus/prometheus.yml, so a wrong regex or a
missing rule shows up here rather than as an empty dashboard.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

CONFIG = Path(__file__).resolve().parents[2] / "manifests/monitoring/prometheus/prometheus.yml"


def _jobs() -> dict[str, dict[str, Any]]:
    cfg = yaml.safe_load(CONFIG.read_text())
    return {j["job_name"]: j for j in cfg["scrape_configs"]}


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _pod_target(
    *,
    namespace: str,
    name: str,
    ip: str,
    port: int,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
) -> dict[str, str]:
    """The labels role: pod discovery gives one container port of a pod."""
    t = {
        "__address__": f"{ip}:{port}",
        "__metrics_path__": "/metrics",
        "__scheme__": "http",
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_container_port_number": str(port),
    }
    for k, v in labels.items():
        t[f"__meta_kubernetes_pod_label_{_sanitize(k)}"] = v
        t[f"__meta_kubernetes_pod_labelpresent_{_sanitize(k)}"] = "true"
    for k, v in (annotations or {}).items():
        t[f"__meta_kubernetes_pod_annotation_{_sanitize(k)}"] = v
    return t


def _relabel(job: dict[str, Any], target: dict[str, str]) -> dict[str, str] | None:
    labels = dict(target)
    labels.setdefault("job", job["job_name"])
    for rule in job.get("relabel_configs", []):
        action = rule.get("action", "replace")
        sep = rule.get("separator", ";")
        value = sep.join(labels.get(s, "") for s in rule.get("source_labels", []))
        regex = re.compile(f"^(?:{rule.get('regex', '(.*)')})$")
        m = regex.match(value)
        if action == "keep" and not m:
            return None
        if action == "drop" and m:
            return None
        if action == "replace" and m:
            repl = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", str(rule.get("replacement", "$1")))
            new = m.expand(repl)
            if new:
                labels[rule["target_label"]] = new
            else:
                labels.pop(rule["target_label"], None)
    return {k: v for k, v in labels.items() if not k.startswith("__meta_")}


def _scraped_by(target: dict[str, str]) -> dict[str, dict[str, str]]:
    out = {}
    for name, job in _jobs().items():
        if "kubernetes_sd_configs" not in job:
            continue
        r = _relabel(job, target)
        if r is not None:
            out[name] = r
    return out


OPERATOR_POD = {
    "namespace": "kubeloop-system",
    "name": "kubeloop-operator-7d9f-abcde",
    "ip": "10.244.0.5",
    "labels": {"app.kubernetes.io/name": "kubeloop-operator"},
    "annotations": {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    },
}


def test_operator_pod_is_scraped_once_on_its_metrics_port() -> None:
    # Discovery yields one target per container port (8080 metrics, 8081 health): both
    # become the same 8080 target, which Prometheus de-duplicates.
    for port in (8080, 8081):
        got = _scraped_by(_pod_target(port=port, **OPERATOR_POD))  # type: ignore[arg-type]
        assert set(got) == {"kubeloop-operator"}
        t = got["kubeloop-operator"]
        assert t["__address__"] == "10.244.0.5:8080"
        assert t["__metrics_path__"] == "/metrics"
        assert t["job"] == "kubeloop-operator"
        assert t["namespace"] == "kubeloop-system"
        assert t["pod"] == "kubeloop-operator-7d9f-abcde"


def test_the_operator_job_keeps_exported_namespace_labels() -> None:
    assert _jobs()["kubeloop-operator"]["honor_labels"] is True


PREDICTOR_LABELS = {
    "app.kubernetes.io/component": "predictor",
    "kubeloop.io/inferenceservice": "iris",
    "kubeloop.io/model": "iris",
    "kubeloop.io/modelversion": "iris-v2",
    "kubeloop.io/role": "canary",
}


def test_predictor_pod_gets_its_kubeloop_labels() -> None:
    target = _pod_target(
        namespace="ml",
        name="iris-predictor-canary-x1",
        ip="10.244.0.9",
        port=8080,
        labels=PREDICTOR_LABELS,
    )
    got = _scraped_by(target)
    assert set(got) == {"kubeloop-predictors"}
    t = got["kubeloop-predictors"]
    assert t["__address__"] == "10.244.0.9:8080"
    assert (t["namespace"], t["pod"], t["inferenceservice"], t["role"], t["modelversion"]) == (
        "ml",
        "iris-predictor-canary-x1",
        "iris",
        "canary",
        "iris-v2",
    )
    # The runtime's own model/version labels must not be shadowed by pod labels.
    assert "model" not in t and "version" not in t


def test_predictor_annotations_choose_port_and_path() -> None:
    target = _pod_target(
        namespace="ml",
        name="p",
        ip="10.244.0.9",
        port=9000,
        labels=PREDICTOR_LABELS,
        annotations={
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8080",
            "prometheus.io/path": "/stats",
        },
    )
    t = _scraped_by(target)["kubeloop-predictors"]
    assert t["__address__"] == "10.244.0.9:8080"
    assert t["__metrics_path__"] == "/stats"


def test_predictor_can_opt_out_and_pending_pods_are_skipped() -> None:
    out = _pod_target(
        namespace="ml",
        name="p",
        ip="10.0.0.1",
        port=8080,
        labels=PREDICTOR_LABELS,
        annotations={"prometheus.io/scrape": "false"},
    )
    assert _scraped_by(out) == {}
    pending = _pod_target(
        namespace="ml",
        name="p",
        ip="10.0.0.1",
        port=8080,
        labels=PREDICTOR_LABELS,
        phase="Pending",
    )
    assert _scraped_by(pending) == {}


def test_other_pods_only_by_annotation() -> None:
    annotated = _pod_target(
        namespace="apps",
        name="web",
        ip="10.0.0.2",
        port=9102,
        labels={"app": "web"},
        annotations={"prometheus.io/scrape": "true"},
    )
    got = _scraped_by(annotated)
    assert set(got) == {"kubernetes-pods"}
    assert got["kubernetes-pods"]["__address__"] == "10.0.0.2:9102"
    plain = _pod_target(namespace="apps", name="db", ip="10.0.0.3", port=5432, labels={})
    assert _scraped_by(plain) == {}
    # A training pod (not a predictor, not annotated) is not scraped.
    trainer = _pod_target(
        namespace="ml",
        name="iris-train-x",
        ip="10.0.0.4",
        port=8080,
        labels={"kubeloop.io/trainingjob": "iris"},
    )
    assert _scraped_by(trainer) == {}
