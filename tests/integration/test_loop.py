"""The closed loop end to end: drift -> retrain -> champion gate -> canary -> promote/rollback.

Everything is real: the control plane, the operator process, ``kubeloop-train`` behind the
training pods and ``kubeloop-serve`` behind the predictor pods on their (loopback) pod IPs,
run by the test kubelet. The tests send inference traffic to the pods the way clients would
and watch the operator close the loop.

The story: iris v1 serves as ``production``. Then the world shifts — petal length is
measured +2 standard deviations higher — and the served inputs drift. The retraining
template trains on a ConfigMap CSV of iris with that shift. On the challenger's held-out
(shifted) rows, v1 scores poorly and the challenger well, so it passes the champion gate.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config
from sklearn.datasets import load_iris

from kubeloop import cli
from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import (
    Cluster,
    OperatorProcess,
    condition,
    is_true,
    service_account_kubeconfig,
    wait_for,
)

ISVC = "iris-svc"
STABLE = f"{ISVC}-predictor"
CANARY = f"{ISVC}-predictor-canary"
FEATURE = "petal length (cm)"
TIMEOUT = 120


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def artifacts(artifacts_pvc: str) -> str:
    return artifacts_pvc


@pytest.fixture
def world(
    kube: Kube, namespace: str, artifacts: str, kubelet: Any, operator: OperatorProcess
) -> World:
    w = World(kube, namespace, kubelet, operator)
    w.shifted_dataset()
    w.train_v1()
    return w


# ----------------------------------------------------------------------------- data


def iris_frame(shift_std: float = 0.0) -> Any:
    frame = load_iris(as_frame=True).frame
    frame[FEATURE] = frame[FEATURE] + shift_std * float(frame[FEATURE].std())
    return frame


def rows(shift_std: float = 0.0) -> list[list[float]]:
    frame = iris_frame(shift_std).drop(columns=["target"])
    return [[float(v) for v in r] for r in frame.itertuples(index=False)]


# ----------------------------------------------------------------------------- the world


class World:
    def __init__(self, kube: Kube, ns: str, kubelet: Any, op: OperatorProcess) -> None:
        self.kube, self.ns, self.kubelet, self.op = kube, ns, kubelet, op

    # --- objects ----------------------------------------------------------------
    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(api.API_VERSION, kind, self.ns, name)

    def isvc(self) -> dict[str, Any]:
        obj = self.get("InferenceService", ISVC)
        assert obj is not None
        return obj

    def status(self) -> dict[str, Any]:
        return self.isvc().get("status") or {}

    def condition(self, type_: str) -> dict[str, Any]:
        return condition(self.isvc(), type_)

    def retrains(self) -> list[dict[str, Any]]:
        return self.kube.list(
            api.API_VERSION, "TrainingJob", self.ns, labels={api.LABEL_INFERENCESERVICE: ISVC}
        )

    def deployments(self) -> list[str]:
        return sorted(
            d["metadata"]["name"]
            for d in self.kube.list(
                "apps/v1", "Deployment", self.ns, labels={api.LABEL_INFERENCESERVICE: ISVC}
            )
        )

    def alias_holder(self, alias: str = "production") -> str | None:
        holders = [
            mv["metadata"]["name"]
            for mv in self.kube.list(api.API_VERSION, "ModelVersion", self.ns)
            if alias in ((mv.get("status") or {}).get("aliases") or [])
        ]
        return holders[0] if len(holders) == 1 else None

    def events(self) -> list[str]:
        evs = client.CoreV1Api(self.kube.api_client).list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={ISVC}"
        )
        return [e.reason for e in evs.items]

    def wait(self, fn: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        try:
            return wait_for(fn, timeout=timeout, interval=0.5, what=what)
        except AssertionError as e:
            raise AssertionError(
                f"{e}\nstatus: {json.dumps(self.status(), indent=1)}\n"
                f"--- operator log ---\n{self.op.log()[-5000:]}\n"
                f"kubelet errors: {self.kubelet.errors}"
            ) from e

    def stays(self, fn: Callable[[], bool], seconds: float, what: str) -> None:
        """Assert ``fn`` holds for ``seconds`` (several loop ticks): nothing happens."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert fn(), what
            time.sleep(0.5)

    # --- setup ------------------------------------------------------------------
    def shifted_dataset(self) -> None:
        csv = iris_frame(2.0).to_csv(index=False)
        self.kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "iris-shifted", "namespace": self.ns},
                "data": {"iris.csv": csv},
            }
        )

    def train_v1(self) -> None:
        self.kube.create(
            {
                "apiVersion": api.API_VERSION,
                "kind": "TrainingJob",
                "metadata": {"name": "iris-train", "namespace": self.ns},
                "spec": {
                    "model": "iris",
                    "dataset": {"builtin": "iris"},
                    "estimator": {
                        "type": "LogisticRegression",
                        "hyperparameters": {"max_iter": 500},
                    },
                    "artifact": {"onnx": False},
                },
            }
        )
        self.wait(lambda: self._ready_mv("iris-v1"), "iris-v1 to be registered and Ready")
        # As a user would (`kubectl patch --type merge`): no resourceVersion precondition, so
        # the operator's own status writes on iris-v1 cannot make this step conflict.
        aliases = {"spec": {"aliases": ["production"]}}
        self.kube.patch(api.API_VERSION, "ModelVersion", self.ns, "iris-v1", aliases)
        self.wait(lambda: self.alias_holder() == "iris-v1", "alias production on iris-v1")

    def _ready_mv(self, name: str) -> dict[str, Any] | None:
        mv = self.get("ModelVersion", name)
        return mv if is_true(mv, "Ready") else None

    def serve(self, retraining: dict[str, Any], drift_share: float = 0.25) -> None:
        self.kube.create(
            {
                "apiVersion": api.API_VERSION,
                "kind": "InferenceService",
                "metadata": {"name": ISVC, "namespace": self.ns},
                "spec": {
                    "model": {"model": "iris", "alias": "production"},
                    "replicas": 3,
                    "monitoring": {"drift": {"windowSize": 60, "datasetDriftShare": drift_share}},
                    "retraining": retraining,
                },
            }
        )
        self.wait(lambda: len(self.pod_ips("stable", "iris-v1")) == 3, "3 stable servers of v1")

    # --- traffic ----------------------------------------------------------------
    def pod_ips(self, role: str, version: str | None = None) -> list[str]:
        """IPs of this role's Running pods whose real server answers ready."""
        out = []
        labels = {api.LABEL_INFERENCESERVICE: ISVC, api.LABEL_ROLE: role}
        if version:
            labels[api.LABEL_MODELVERSION] = version
        for p in self.kube.list("v1", "Pod", self.ns, labels=labels):
            ip = (p.get("status") or {}).get("podIP")
            if p["metadata"].get("deletionTimestamp") or not ip:
                continue
            try:
                with urllib.request.urlopen(f"http://{ip}:8080/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        out.append(ip)
            except OSError:
                continue
        return out

    def predict(self, ip: str, instances: list[list[float]]) -> list[Any]:
        req = urllib.request.Request(
            f"http://{ip}:8080/v1/models/{ISVC}:predict",
            data=json.dumps({"instances": instances}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read())
        return list(body["predictions"])

    def send(self, role: str, shift_std: float, batches: int = 1, size: int = 60) -> int:
        """Send ``batches`` requests of ``size`` rows to every pod of ``role``."""
        data = rows(shift_std)
        sent = 0
        for ip in self.pod_ips(role):
            for i in range(batches):
                start = (i * size) % len(data)
                batch = (data * 2)[start : start + size]
                assert len(self.predict(ip, batch)) == len(batch)
                sent += 1
        return sent

    def drift_until_retrain(self) -> dict[str, Any]:
        def started() -> dict[str, Any] | None:
            self.send("stable", 2.0)
            runs = self.retrains()
            return runs[0] if runs else None

        return dict(self.wait(started, "drift to start a retraining TrainingJob"))


def retraining_policy(**overrides: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "triggers": {"drift": True},
        "template": {
            "dataset": {
                "configMap": {"name": "iris-shifted", "key": "iris.csv"},
                "target": "target",
            },
            "estimator": {"type": "LogisticRegression", "hyperparameters": {"max_iter": 500}},
            "artifact": {"onnx": False},
        },
        "cooldownSeconds": 3600,
        "championGate": {"enabled": True, "metric": "accuracy", "maxRegression": 0.02},
        "canaryTrafficPercent": 25,
        "analysis": {"windowSeconds": 10, "minRequests": 5, "maxErrorRate": 0.0},
    }
    policy.update(overrides)
    return policy


def finished(w: World, name: str) -> dict[str, Any] | None:
    tj = w.get("TrainingJob", name)
    return tj if condition(tj, "Succeeded").get("status") in ("True", "False") else None


# ----------------------------------------------------------------------------- tests


def test_drift_retrains_gates_canaries_and_promotes(world: World, cluster: Cluster) -> None:
    w = world
    w.serve(retraining_policy())
    assert w.condition("Retraining").get("reason") == "Watching"

    # Served inputs drift: exactly one retraining run, naming the service and the signal.
    tj = w.drift_until_retrain()
    name = tj["metadata"]["name"]
    assert name == f"{ISVC}-retrain-1"
    trigger = tj["spec"]["trigger"]
    assert (trigger["inferenceService"], trigger["signal"]) == (ISVC, "drift")
    assert float(trigger["value"]) >= 0.25
    assert tj["spec"]["champion"] == "iris-v1"
    assert tj["spec"]["model"] == "iris"
    assert tj["metadata"]["ownerReferences"][0]["uid"] == w.isvc()["metadata"]["uid"]

    # Crash right after the TrainingJob was created: nothing lost, nothing doubled.
    w.op.restart()
    w.send("stable", 2.0)
    w.wait(lambda: w.status().get("lastRetrain", {}).get("trainingJob") == name, "lastRetrain")
    assert w.condition("Retraining")["status"] == "True"
    assert w.condition("Retraining")["reason"] == "DriftDetected"

    # The challenger passes the gate against v1 on the same (shifted) held-out rows.
    done = w.wait(lambda: finished(w, name), f"{name} to finish")
    assert done["status"]["conditions"], done
    succeeded = next(c for c in done["status"]["conditions"] if c["type"] == "Succeeded")
    assert succeeded["status"] == "True", succeeded
    mv2 = w.get("ModelVersion", "iris-v2")
    assert mv2 is not None
    metrics = mv2["spec"]["metrics"]
    assert metrics["champion_accuracy"] < metrics["accuracy"]
    assert mv2["spec"]["lineage"]["trainingJob"] == name
    assert mv2["spec"]["lineage"]["trigger"]["signal"] == "drift"
    assert mv2["spec"]["dataset"]["source"] == "configmap:iris-shifted/iris.csv"

    # A canary with 1 replica (25 % of 3 + 1), serving v2 through the real server.
    w.wait(lambda: w.status().get("canaryVersion") == "iris-v2", "the loop's canary")
    canary = w.wait(lambda: w.kube.get("apps/v1", "Deployment", w.ns, CANARY), "canary Deployment")
    assert canary["spec"]["replicas"] == 1
    ip = w.wait(lambda: w.pod_ips("canary", "iris-v2"), "the canary server")[0]
    assert len(w.predict(ip, rows(2.0)[:5])) == 5

    # Crash during the analysis: the clock and the canary survive.
    w.send("canary", 2.0, batches=3, size=20)
    w.op.restart()
    w.wait(lambda: w.status().get("canaryStartTime"), "the analysis to start")

    # Healthy traffic to the canary: promoted, the alias moves, one Deployment remains.
    def promoted() -> bool:
        w.send("canary", 2.0, batches=2, size=20)
        return w.alias_holder() == "iris-v2"

    w.wait(promoted, "the canary to be promoted (alias production -> iris-v2)")
    w.wait(lambda: w.deployments() == [STABLE], "the canary Deployment to go")
    stable = w.kube.get("apps/v1", "Deployment", w.ns, STABLE)
    assert stable is not None
    assert stable["spec"]["template"]["metadata"]["labels"][api.LABEL_MODELVERSION] == "iris-v2"
    w.wait(lambda: len(w.pod_ips("stable", "iris-v2")) == 3, "v2 serving on the stable pods")
    st = w.status()
    assert st["servingVersion"] == "iris-v2"
    assert st["analysis"]["decision"] == "Promote"
    assert st["analysis"]["metrics"]["requests"] >= 5
    assert not st.get("loopCanary")
    c = w.condition("CanaryAnalysis")
    assert (c["status"], c["reason"]) == ("True", "Promoted"), c
    assert w.condition("Retraining")["reason"] == "ChallengerAccepted"
    reasons = w.events()
    for r in ("RetrainingStarted", "CanaryStarted", "AnalysisPassed", "Promoted"):
        assert r in reasons, reasons

    # Exactly one retraining all along (drift persists, but the cooldown holds).
    w.stays(lambda: len(w.retrains()) == 1, 4, "a second retraining started")
    # (The operator restarted after starting the run; the promotion came after that.)
    promotions = f'kubeloop_promotions_total{{inferenceservice="{ISVC}",namespace="{w.ns}"}}'
    assert f"{promotions} 1.0" in w.op.metrics()

    # Lineage in one view: the plugin's history and lineage.
    out = io.StringIO()
    base = ["--kubeconfig", str(cluster.kubeconfig), "-n", w.ns]
    assert cli.main([*base, "history", "iris"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["NAME", "VERSION", "ALIASES"]
    assert lines[1].split()[:3] == ["iris-v2", "2", "production"]
    assert (
        "drift=" in lines[1] and name in lines[1] and "configmap:iris-shifted/iris.csv" in lines[1]
    )
    assert lines[2].split()[:3] == ["iris-v1", "1", "-"]
    out = io.StringIO()
    assert cli.main([*base, "lineage", ISVC], out=out) == 0
    assert f"trained by:   TrainingJob {name}" in out.getvalue()
    assert "trigger:      drift=" in out.getvalue()


def test_manual_retrain_and_a_canary_that_fails_analysis_is_rolled_back(
    world: World, cluster: Cluster
) -> None:
    """A latency objective the canary cannot meet (p99 <= 100 µs, measured by the real
    server's request histogram) rolls it back; v1 keeps serving."""
    w = world
    w.serve(
        retraining_policy(
            triggers={"drift": False},
            analysis={
                "windowSeconds": 10,
                "minRequests": 5,
                "maxErrorRate": 0.05,
                "maxP99LatencySeconds": 0.0001,
            },
        )
    )
    out = io.StringIO()
    base = ["--kubeconfig", str(cluster.kubeconfig), "-n", w.ns]
    assert cli.main([*base, "retrain", ISVC, "--value", "now"], out=out) == 0
    tj = w.wait(lambda: (w.retrains() or [None])[0], "the manual retraining")
    assert tj["spec"]["trigger"]["signal"] == "manual"
    assert tj["spec"]["trigger"]["value"] == "now"
    assert w.isvc()["metadata"]["annotations"][api.ANNOTATION_RETRAIN] == "now"

    w.wait(lambda: w.pod_ips("canary", "iris-v2"), "the canary server")

    def rolled_back() -> bool:
        w.send("canary", 2.0, batches=2, size=10)
        return w.condition("CanaryAnalysis").get("reason") == "RolledBack"

    w.wait(rolled_back, "the canary to be rolled back")
    c = w.condition("CanaryAnalysis")
    assert c["status"] == "False"
    assert "p99 latency" in c["message"] and "0.0001" in c["message"], c
    w.wait(lambda: w.deployments() == [STABLE], "the canary Deployment to go")
    assert w.alias_holder() == "iris-v1"
    assert w.status()["servingVersion"] == "iris-v1"
    assert w.status()["analysis"]["decision"] == "Rollback"
    assert len(w.pod_ips("stable", "iris-v1")) == 3
    assert "RolledBack" in w.events()
    text = w.op.metrics()
    labels = f'inferenceservice="{ISVC}",namespace="{w.ns}"'
    assert f'kubeloop_retrains_total{{{labels},signal="manual"}} 1.0' in text
    assert f'kubeloop_rollbacks_total{{{labels},reason="analysis"}} 1.0' in text
    # The same annotation value does not retrain again; no canary comes back.
    w.stays(lambda: len(w.retrains()) == 1 and w.deployments() == [STABLE], 4, "loop repeated")


def editor_kubeconfig(cluster: Cluster, ns: str, dest: Path) -> Path:
    """A person with the shipped editor roles in ``ns`` (InferenceServices, ModelVersions)
    and the TrainingJob viewer role: what a team's ML engineer gets."""
    roles = (
        "kubeloop-inferenceservice-editor",
        "kubeloop-modelversion-editor",
        "kubeloop-trainingjob-viewer",
    )
    cluster.kubectl("create", "serviceaccount", "ml-engineer", "-n", ns)
    for role in roles:
        cluster.kubectl(
            "create", "rolebinding", role, f"--clusterrole={role}",
            f"--serviceaccount={ns}:ml-engineer", "-n", ns,
        )  # fmt: skip
    return service_account_kubeconfig(cluster, ns, "ml-engineer", dest)


def test_an_editor_retrains_rolls_back_and_promotes_with_the_plugin(
    world: World, cluster: Cluster, tmp_path: Path
) -> None:
    """`kubectl kubeloop retrain|rollback|promote` as a user with the editor role: each
    writes intent (an annotation, a spec), never the status, and the loop acts on it."""
    w = world
    # A window long enough that only the person decides.
    w.serve(
        retraining_policy(
            triggers={"drift": False},
            analysis={"windowSeconds": 3600, "minRequests": 5, "maxErrorRate": 0.0},
        )
    )
    editor = editor_kubeconfig(cluster, w.ns, tmp_path / "editor.kubeconfig")
    as_editor = Kube(new_client_from_config(str(editor)))
    with pytest.raises(ApiException) as denied:
        as_editor.patch_status(api.API_VERSION, "InferenceService", w.ns, ISVC, {"phase": "x"})
    assert denied.value.status == 403  # the test's user really cannot write the status
    base = ["--kubeconfig", str(editor), "-n", w.ns]

    def plugin(*argv: str) -> str:
        out = io.StringIO()
        assert cli.main([*base, *argv], out=out) == 0, out.getvalue()
        return out.getvalue()

    plugin("retrain", ISVC, "--value", "first")
    w.wait(lambda: w.pod_ips("canary", "iris-v2"), "the canary of iris-v2")
    assert "rollback requested" in plugin("rollback", ISVC)
    w.wait(
        lambda: w.condition("CanaryAnalysis").get("reason") == "RolledBack",
        "the canary to be rolled back on request",
    )
    w.wait(lambda: w.deployments() == [STABLE], "the canary Deployment to go")
    analysis = w.status()["analysis"]
    assert (analysis["decision"], analysis["source"], analysis["modelVersion"]) == (
        "Rollback",
        "manual",
        "iris-v2",
    )
    assert w.alias_holder() == "iris-v1"
    labels = f'inferenceservice="{ISVC}",namespace="{w.ns}"'
    w.wait(
        lambda: f'kubeloop_rollbacks_total{{{labels},reason="manual"}} 1.0' in w.op.metrics(),
        "the rollback counted as manual",
    )
    assert f'kubeloop_rollbacks_total{{{labels},reason="analysis"}} 0.0' in w.op.metrics()

    plugin("retrain", ISVC, "--value", "second")
    w.wait(lambda: w.pod_ips("canary", "iris-v3"), "the canary of iris-v3")
    assert "iris-v3" in plugin("promote", ISVC)
    w.wait(lambda: w.alias_holder() == "iris-v3", "production on iris-v3")
    w.wait(
        lambda: w.deployments() == [STABLE] and w.status().get("servingVersion") == "iris-v3",
        "iris-v3 serving on the stable Deployment alone",
    )
    assert w.condition("CanaryAnalysis")["reason"] == "Promoted"
    assert w.status()["analysis"]["source"] == "manual"


def test_failing_gate_stops_the_loop_and_a_flapping_signal_waits_for_the_cooldown(
    world: World,
) -> None:
    w = world
    weak = retraining_policy(
        template={
            "dataset": {"builtin": "iris"},
            "estimator": {"type": "DecisionTreeClassifier", "hyperparameters": {"max_depth": 1}},
            "artifact": {"onnx": False},
        },
        championGate={"enabled": True, "maxRegression": 0.0},
    )
    w.serve(weak)
    tj = w.drift_until_retrain()
    name = tj["metadata"]["name"]
    w.wait(lambda: w.condition("Retraining").get("reason") == "ChallengerRejected", "rejection")
    c = w.condition("Retraining")
    assert c["status"] == "False"
    assert "champion gate failed" in c["message"] and "iris-v1" in c["message"], c
    done = finished(w, name)
    assert done is not None and done["status"]["reason"] == "QualityGateFailed"
    assert "ChallengerRejected" in w.events()

    # The drift flaps (healthy inputs, then drifted again) within the cooldown: no new run,
    # no canary, v1 keeps serving.
    w.send("stable", 0.0, batches=2)
    w.send("stable", 2.0, batches=2)
    w.stays(
        lambda: len(w.retrains()) == 1 and w.deployments() == [STABLE],
        5,
        "a second retraining or a canary started within the cooldown",
    )
    assert w.alias_holder() == "iris-v1"
    assert w.status()["lastRetrain"]["trainingJob"] == name
