"""Every dashboard panel has data, against a real Prometheus scraping the real processes.

The story: the real operator trains an iris classifier (two versions) and a diabetes
regressor through TrainingJobs, run by the test kubelet with the real ``kubeloop-train``;
both models are aliased ``production`` and served by InferenceServices, iris with a canary
of its second version, each predictor pod backed by a real ``kubeloop-serve``.

Debian's Prometheus scrapes them with the scrape jobs and relabel rules of
``manifests/monitoring/prometheus/prometheus.yml``: Kubernetes pod discovery is replaced by
file discovery fed with the real pod objects (and the operator Deployment's pod template for
the operator, which runs as a local process), so target labels come from the real rules.
Prometheus starts before the first TrainingJob, so it sees counters at 0 before they move,
as it would in a cluster that was already running.

Then a short load: V1 and V2 predictions, bad requests (4xx), inputs that drift for iris,
ground-truth feedback (live accuracy, live error). Finally every query of every panel of
every dashboard, with its template variables set to this test's values, runs as an instant
query and must succeed and return data; the variable queries must list this test's values.
Every empty or broken panel is reported at once.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from sklearn.datasets import load_diabetes, load_iris

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import Cluster, OperatorProcess, wait_for
from tests.prometheus_runner import Prometheus, PrometheusError

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "manifests" / "monitoring" / "dashboards"
PROMETHEUS_CONFIG = ROOT / "manifests" / "monitoring" / "prometheus" / "prometheus.yml"

IRIS, DIABETES = "iris", "diabetes"  # InferenceService and model names
TIMEOUT = 120
SCRAPE_INTERVAL = "1s"
# Grafana's $__rate_interval is max($__interval + scrape interval, 4 x scrape interval); a
# fixed 30 s covers the whole load at a 1 s scrape interval.
RATE_INTERVAL = "30s"
IRIS_SHIFTED = "petal length (cm)"


# ----------------------------------------------------------------------------- the panels


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str

    def where(self) -> str:
        return f"{self.dashboard} / {self.panel!r} [{self.ref}]"


def _panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in doc.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows nest their panels


def panel_queries() -> list[PanelQuery]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for p in _panels(doc):
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append(PanelQuery(path.name, p["title"], t.get("refId", "?"), t["expr"]))
    return out


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<sel>.+),\s*)?(?P<label>[a-zA-Z_]\w*)\)$")


def variable_queries() -> list[tuple[str, str, str | None, str]]:
    """(dashboard, variable, selector or None, label) of each label_values() variable."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for v in doc.get("templating", {}).get("list", []):
            if v.get("type") != "query":
                continue
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = _LABEL_VALUES.match(str(q).strip())
            assert m, f"{path.name} variable {v['name']}: not a label_values() query: {q!r}"
            out.append((path.name, v["name"], m.group("sel"), m.group("label")))
    return out


def substitute(expr: str, variables: dict[str, list[str]]) -> str:
    """Grafana's interpolation for Prometheus: a multi-value variable inside a regex
    matcher becomes ``(a|b)`` of regex-escaped values."""
    out = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", "15s")
    out = out.replace("$__range", "1h")
    for name in sorted(variables, key=len, reverse=True):
        values = "(" + "|".join(_regex_escape(v) for v in variables[name]) + ")"
        pattern = rf"\$\{{{name}\}}|\[\[{name}\]\]|\${name}\b"
        out = re.sub(pattern, lambda _m: values, out)  # noqa: B023 (used at once)
    leftover = re.findall(r"\$\{?\w+", out)
    assert not leftover, f"unknown template variable(s) {leftover} in {expr!r}"
    return out


def _regex_escape(value: str) -> str:
    """Escape regex metacharacters inside a PromQL string: ``a.b`` -> ``a\\\\.b`` (PromQL
    unescapes the string to ``a\\.b``, which the regex engine reads as a literal dot)."""
    return "".join("\\\\" + c if c in "\\^$.|?*+()[]{}" else c for c in value)


def _finite(sample: dict[str, Any]) -> bool:
    try:
        return math.isfinite(float(sample["value"][1]))
    except (KeyError, TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- the world


@dataclass
class Served:
    pod: str
    ip: str
    isvc: str
    role: str


class World:
    def __init__(self, kube: Kube, ns: str, kubelet: Any, op: OperatorProcess) -> None:
        self.kube, self.ns, self.kubelet, self.op = kube, ns, kubelet, op

    def wait(self, fn: Any, what: str, timeout: float = TIMEOUT) -> Any:
        try:
            return wait_for(fn, timeout=timeout, interval=0.3, what=what)
        except AssertionError as e:
            raise AssertionError(
                f"{e}\n--- operator log ---\n{self.op.log()[-4000:]}\n"
                f"kubelet errors: {self.kubelet.errors}"
            ) from e

    def train(self, name: str, model: str, builtin: str, estimator: dict[str, Any]) -> None:
        self.kube.create(
            {
                "apiVersion": api.API_VERSION,
                "kind": "TrainingJob",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": {
                    "model": model,
                    "dataset": {"builtin": builtin},
                    "estimator": estimator,
                    "artifact": {"onnx": False},
                },
            }
        )

    def registered(self, trainingjob: str) -> dict[str, Any] | None:
        """The Ready ModelVersion a TrainingJob registered."""
        for mv in self.kube.list(
            api.API_VERSION, "ModelVersion", self.ns, labels={api.LABEL_TRAININGJOB: trainingjob}
        ):
            conds = (mv.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                return mv
        failed = self.kube.get(api.API_VERSION, "TrainingJob", self.ns, trainingjob) or {}
        for c in (failed.get("status") or {}).get("conditions") or []:
            if c["type"] == api.COND_SUCCEEDED and c["status"] == "False":
                raise RuntimeError(f"TrainingJob {trainingjob} failed: {c}")
        return None

    def alias(self, mv: dict[str, Any], alias: str) -> None:
        """Ask for ``alias`` on a ModelVersion as a user would (optimistic concurrency: the
        operator writes the object too, so a 409 means read again and retry)."""
        name = mv["metadata"]["name"]

        def requested() -> bool:
            cur = self.kube.get(api.API_VERSION, "ModelVersion", self.ns, name) or {}
            if alias in ((cur.get("spec") or {}).get("aliases") or []):
                return True
            patch = {
                "metadata": {"resourceVersion": cur["metadata"]["resourceVersion"]},
                "spec": {"aliases": [alias]},
            }
            try:
                self.kube.patch(api.API_VERSION, "ModelVersion", self.ns, name, patch)
            except ApiException as e:
                if e.status == 409:
                    return False
                raise
            return True

        def confirmed() -> bool:
            cur = self.kube.get(api.API_VERSION, "ModelVersion", self.ns, name) or {}
            return alias in ((cur.get("status") or {}).get("aliases") or [])

        self.wait(requested, f"alias {alias} requested on {name}")
        self.wait(confirmed, f"alias {alias} confirmed on {name}")

    def serve(self, name: str, model: str, canary: str | None = None) -> None:
        spec: dict[str, Any] = {
            "model": {"model": model, "alias": "production"},
            "replicas": 1,
            "monitoring": {"drift": {"windowSize": 50}, "feedbackWindow": 50},
        }
        if canary is not None:
            spec["canary"] = {"modelVersion": canary, "trafficPercent": 50}
        self.kube.create(
            {
                "apiVersion": api.API_VERSION,
                "kind": "InferenceService",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": spec,
            }
        )

    def ready(self, name: str) -> bool:
        isvc = self.kube.get(api.API_VERSION, "InferenceService", self.ns, name) or {}
        conds = (isvc.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def pods(self) -> list[dict[str, Any]]:
        return self.kube.list("v1", "Pod", self.ns)

    def servers(self) -> list[Served]:
        """Predictor pods whose real kubeloop-serve answers ready."""
        running = {s.pod: s for s in self.kubelet.running_servers()}
        out = []
        for p in self.pods():
            labels = p["metadata"].get("labels") or {}
            s = running.get(p["metadata"]["name"])
            if s is None or p["metadata"].get("deletionTimestamp"):
                continue
            try:
                with urllib.request.urlopen(f"{s.url}/v2/health/ready", timeout=1) as r:
                    if r.status != 200:
                        continue
            except OSError:
                continue
            isvc, role = labels[api.LABEL_INFERENCESERVICE], labels[api.LABEL_ROLE]
            out.append(Served(s.pod, s.ip, isvc, role))
        return out


def operator_pod(cluster: Cluster, op: OperatorProcess) -> dict[str, Any]:
    """The pod the operator Deployment of manifests/base would run, as discovery sees it,
    with the ports this test's operator process listens on."""
    rendered = cluster.kubectl("kustomize", str(ROOT / "manifests" / "base")).stdout
    (dep,) = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d.get("kind") == "Deployment" and d["metadata"]["name"] == "kubeloop-operator"
    ]
    template = dep["spec"]["template"]
    ports = {"metrics": op.metrics_port, "health": op.health_port}
    annotations = dict(template["metadata"].get("annotations") or {})
    annotations["prometheus.io/port"] = str(op.metrics_port)
    containers = [
        {
            **c,
            "ports": [
                {**p, "containerPort": ports.get(p.get("name"), p["containerPort"])}
                for p in c.get("ports") or []
            ],
        }
        for c in template["spec"]["containers"]
    ]
    return {
        "metadata": {
            "name": "kubeloop-operator-0",
            "namespace": dep["metadata"]["namespace"],
            "uid": "operator",
            "labels": dict(template["metadata"].get("labels") or {}),
            "annotations": annotations,
        },
        "spec": {"containers": containers, "nodeName": "local"},
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


# ----------------------------------------------------------------------------- traffic


def _post(url: str, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def load(server: Served, rows: list[list[float]], truth: list[Any]) -> dict[str, int]:
    """Predictions over V1 and V2 in batches of 5 with ground truth for each, and two bad
    requests (a wrong feature count over V1, a malformed tensor over V2): 4xx answers."""
    base = f"http://{server.ip}:8080"
    codes: dict[str, int] = {}

    def count(code: int) -> None:
        codes[str(code)] = codes.get(str(code), 0) + 1

    for i in range(0, len(rows), 5):
        batch, labels = rows[i : i + 5], truth[i : i + 5]
        if (i // 5) % 2 == 0:
            code, doc = _post(f"{base}/v1/models/{server.isvc}:predict", {"instances": batch})
        else:
            n, f = len(batch), len(batch[0])
            tensor = {"name": "x", "shape": [n, f], "datatype": "FP64", "data": batch}
            code, doc = _post(f"{base}/v2/models/{server.isvc}/infer", {"inputs": [tensor]})
        count(code)
        assert code == 200, (server, code, doc)
        fb_code, fb = _post(
            f"{base}/v2/models/{server.isvc}/feedback", {"id": doc["id"], "labels": labels}
        )
        assert fb_code == 200, (server, fb_code, fb)
    code, _doc = _post(f"{base}/v1/models/{server.isvc}:predict", {"instances": [[1.0]]})
    count(code)
    bad = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0]}]}
    code, _doc = _post(f"{base}/v2/models/{server.isvc}/infer", bad)
    count(code)
    assert codes == {"200": (len(rows) + 4) // 5, "400": 2}, (server, codes)
    return codes


def iris_rows(shift_std: float) -> tuple[list[list[float]], list[int]]:
    frame = load_iris(as_frame=True).frame
    frame[IRIS_SHIFTED] = frame[IRIS_SHIFTED] + shift_std * float(frame[IRIS_SHIFTED].std())
    frame = frame.sample(frac=1.0, random_state=0)
    x = [[float(v) for v in r] for r in frame.drop(columns=["target"]).itertuples(index=False)]
    return x, [int(t) for t in frame["target"]]


def diabetes_rows() -> tuple[list[list[float]], list[float]]:
    data = load_diabetes()
    return [[float(v) for v in r] for r in data.data[:100]], [float(t) for t in data.target[:100]]


# ----------------------------------------------------------------------------- the test


def test_every_dashboard_panel_has_data(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,
    kubelet: Any,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    w = World(kube, namespace, kubelet, operator)
    queries = panel_queries()
    assert queries, "no dashboard panels found"
    op_pod = operator_pod(cluster, operator)
    prom = Prometheus.from_cluster_config(
        tmp_path / "prometheus", PROMETHEUS_CONFIG, interval=SCRAPE_INTERVAL
    )
    with prom:
        # Prometheus watches the operator before anything happens, as in a running cluster.
        prom.discover([op_pod])
        prom.wait_for_targets(
            lambda ts: {t["labels"]["job"] for t in ts} == {"kubeloop-operator"},
            what="the operator target",
        )

        # Two iris versions and a diabetes regressor, trained by the real kubeloop-train.
        logistic = {"type": "LogisticRegression", "hyperparameters": {"max_iter": 500}}
        w.train("iris-a", IRIS, "iris", logistic)
        w.train(
            "iris-b", IRIS, "iris", {**logistic, "hyperparameters": {"max_iter": 500, "C": 0.5}}
        )
        w.train("diabetes", DIABETES, "diabetes", {"type": "Ridge"})
        iris_a = w.wait(lambda: w.registered("iris-a"), "iris-a registered and Ready")
        iris_b = w.wait(lambda: w.registered("iris-b"), "iris-b registered and Ready")
        diabetes = w.wait(lambda: w.registered("diabetes"), "diabetes registered and Ready")
        w.alias(iris_a, "production")
        w.alias(diabetes, "production")

        # Serve both; iris with a canary of its other version at 50 % (one pod each).
        w.serve(IRIS, IRIS, canary=iris_b["metadata"]["name"])
        w.serve(DIABETES, DIABETES)
        w.wait(lambda: w.ready(IRIS) and w.ready(DIABETES), "both InferenceServices Ready")
        roles = {(IRIS, "stable"), (IRIS, "canary"), (DIABETES, "stable")}

        def all_serving() -> list[Served] | None:
            found = w.servers()
            return found if {(x.isvc, x.role) for x in found} == roles else None

        servers = w.wait(all_serving, "iris (stable, canary) and diabetes to answer")

        # Discovery now offers every pod of the namespace (training pods included): the
        # relabel rules must keep exactly the operator and the predictors.
        prom.discover([op_pod, *w.pods()])
        want = {("kubeloop-operator", op_pod["metadata"]["name"])} | {
            ("kubeloop-predictors", s.pod) for s in servers
        }
        targets = prom.wait_for_targets(
            lambda ts: {(t["labels"]["job"], t["labels"].get("pod")) for t in ts} == want,
            what=f"targets {sorted(want)}",
        )
        for t in targets:
            if t["labels"]["job"] == "kubeloop-predictors":
                s = next(x for x in servers if x.pod == t["labels"]["pod"])
                assert t["labels"]["namespace"] == namespace, t["labels"]
                assert (t["labels"]["inferenceservice"], t["labels"]["role"]) == (s.isvc, s.role)
                assert t["scrapeUrl"] == f"http://{s.ip}:8080/metrics", t
        prom.wait_for_scrapes(2)  # the servers' series are seen at 0 before the load

        # The load: drifted iris inputs (petal length +2 std), diabetes as trained.
        iris_x, iris_y = iris_rows(shift_std=2.0)
        diabetes_x, diabetes_y = diabetes_rows()
        # Three rounds a scrape apart, so Prometheus sees the counters move (a burst
        # between two scrapes would show series that appeared already at their final value).
        for start in range(0, 60, 20):
            part = slice(start, start + 20)
            for s in servers:
                if s.isvc == IRIS:
                    load(s, iris_x[part], iris_y[part])
                else:
                    load(s, diabetes_x[part], diabetes_y[part])
            prom.wait_for_scrapes(1)
        prom.wait_for_scrapes(2)

        # Every panel query, with the variables set to this test's values.
        variables = {
            "namespace": [namespace],
            "inferenceservice": [IRIS, DIABETES],
            "model": [IRIS, DIABETES],
        }
        problems: list[str] = []
        results: dict[str, list[dict[str, Any]]] = {}
        for q in queries:
            expr = substitute(q.expr, variables)
            try:
                result = prom.query(expr)
            except PrometheusError as e:
                problems.append(f"BROKEN {q.where()}: {expr}\n    {e}")
                continue
            results[q.where()] = result
            if not result:
                problems.append(f"EMPTY  {q.where()}: {expr}")
            elif not any(_finite(r) for r in result):
                problems.append(f"NaN    {q.where()}: {expr} -> {result}")

        # The variable queries list this test's values.
        for dashboard, var, selector, label in variable_queries():
            match = substitute(selector, variables) if selector else None
            try:
                values = prom.label_values(label, match)
            except PrometheusError as e:
                problems.append(f"BROKEN {dashboard} variable ${var}: {e}")
                continue
            expected = set(variables[var])
            if not expected <= set(values):
                problems.append(
                    f"VAR    {dashboard} ${var} = label_values({selector}, {label}) lists"
                    f" {values}, missing {sorted(expected - set(values))}"
                )

        assert not problems, (
            f"{len(problems)} of {len(queries)} panel queries / variables have no data:\n"
            + "\n".join(problems)
        )

        # The canary's traffic shows as its own series (the role label from the pod).
        split = results["kubeloop-serving.json / 'Stable vs canary traffic' [A]"]
        assert {(r["metric"].get("inferenceservice"), r["metric"].get("role")) for r in split} >= {
            (IRIS, "stable"),
            (IRIS, "canary"),
            (DIABETES, "stable"),
        }, split
        # And the objects gauge counts what this test made.
        objects = {
            (r["metric"]["kind"], r["metric"]["status"]): float(r["value"][1])
            for r in prom.query("kubeloop_objects")
        }
        assert objects[("TrainingJob", "True")] == 3, objects
        assert objects[("ModelVersion", "True")] == 3, objects
        assert objects[("InferenceService", "True")] == 2, objects


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ('x{a=~"$namespace"}[$__rate_interval]', f'x{{a=~"(ns-1)"}}[{RATE_INTERVAL}]'),
        ('x{a=~"${inferenceservice}"}', 'x{a=~"(iris|diabetes)"}'),
        ('x{a=~"$model"}', 'x{a=~"(a\\\\.b)"}'),
    ],
)
def test_substitute(expr: str, want: str) -> None:
    got = substitute(
        expr, {"namespace": ["ns-1"], "inferenceservice": ["iris", "diabetes"], "model": ["a.b"]}
    )
    assert got == want
