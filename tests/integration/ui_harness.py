"""For the UI's browser tests and its benchmark: registry objects, the UI process, a browser.

- ``model_version``/``training_job``/``inference_service`` build objects as the operator
  would have left them; ``create_with_status`` creates one and writes its status through
  the status subresource (no operator runs: the UI's input is the objects alone).
- ``UIProcess`` runs the real ``kubectl kubeloop ui`` (``python -m kubeloop.cli ... ui``).
- ``chromium`` launches Debian's chromium through Playwright (no browser download).
- ``role_kubeconfig`` mints a kubeconfig for a ServiceAccount with a narrow Role.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import Cluster, free_port, token_kubeconfig

CHROMIUM = os.environ.get("KUBELOOP_CHROMIUM", "/usr/bin/chromium")


def model_version(
    ns: str,
    model: str,
    version: int,
    *,
    accuracy: float,
    training_job: str = "",
    trigger: Mapping[str, str] | None = None,
    gate_passed: bool = True,
    dataset_sha: str = "d" * 64,
) -> dict[str, Any]:
    lineage: dict[str, Any] = {"trainingJob": training_job} if training_job else {}
    if trigger:
        lineage["trigger"] = dict(trigger)
    return {
        "apiVersion": api.API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": f"{model}-v{version}", "namespace": ns},
        "spec": {
            "model": model,
            "version": version,
            "task": "classification",
            "artifact": {
                "uri": f"pvc://kubeloop-artifacts/{ns}/{model}-{version}/model.skops",
                "sha256": f"{version:064x}",
                "format": "skops",
                "sizeBytes": 2048,
            },
            "framework": {
                "python": "3.11.2",
                "sklearn": "1.6.1",
                "numpy": "2.2.1",
                "pandas": "2.2.3",
            },
            "signature": {
                "inputs": [
                    {"name": n, "dtype": "float64"}
                    for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")
                ],
                "output": {"dtype": "int64", "classes": [0, 1, 2]},
            },
            "metrics": {"accuracy": accuracy, "f1": round(accuracy - 0.01, 4)},
            "parameters": {"n_estimators": str(50 + 10 * (version % 5)), "max_depth": "3"},
            "dataset": {"sha256": dataset_sha, "rows": 150, "columns": 5, "source": "builtin:iris"},
            "lineage": lineage,
            "gate": {
                "passed": gate_passed,
                "message": "accuracy >= 0.9" if gate_passed else "accuracy < 0.9",
            },
        },
    }


def training_job(
    ns: str,
    name: str,
    *,
    model: str = "iris",
    champion: str = "",
    trigger: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": model,
        "dataset": {"builtin": "iris"},
        "estimator": {"type": "RandomForestClassifier"},
    }
    if champion:
        spec["champion"] = champion
    if trigger:
        spec["trigger"] = dict(trigger)
    return {
        "apiVersion": api.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def inference_service(ns: str, name: str, model: str, alias: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"model": {"model": model, "alias": alias}},
    }


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-12-01T10:00:00Z",
    }


def create_with_status(kube: Kube, obj: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    created = kube.create(dict(obj))
    assert created is not None, f"{obj['kind']} {obj['metadata']['name']} already exists"
    if status:
        meta = obj["metadata"]
        kube.patch_status(
            obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"], dict(status)
        )


def post_event(
    kube: Kube,
    ns: str,
    kind: str,
    name: str,
    reason: str,
    message: str,
    when: str,
    type_: str = "Normal",
) -> None:
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{reason.lower()}", "namespace": ns},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": kind,
                "name": name,
                "namespace": ns,
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": "kubeloop-operator"},
            "firstTimestamp": when,
            "lastTimestamp": when,
            "count": 1,
        }
    )


@dataclass
class UIProcess:
    """``kubectl kubeloop ui`` as a subprocess, on a free port of 127.0.0.1."""

    kubeconfig: Path
    namespace: str
    workdir: Path
    extra: Sequence[str] = ()
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> UIProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubeloop.cli",
                "--kubeconfig",
                str(self.kubeconfig),
                "-n",
                self.namespace,
                "ui",
                "--port",
                str(port),
                "--no-open",
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / "ui.log", "w"),  # noqa: SIM115
            text=True,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if m:
                self.url = m.group(1)
                return self
        self.stop()
        raise AssertionError(
            f"the UI did not start: {''.join(self.output)}{(self.workdir / 'ui.log').read_text()}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> UIProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        raise AssertionError(f"no chromium at {CHROMIUM}: run hack/install-deps.sh")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def role_kubeconfig(
    cluster: Cluster, ns: str, name: str, rules: Sequence[Mapping[str, Any]], dest: Path
) -> Path:
    """A kubeconfig of ServiceAccount ``name`` bound to a Role with exactly ``rules``."""
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": ns},
            "rules": [dict(r) for r in rules],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        },
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    token = cluster.kubectl("create", "token", name, "-n", ns, "--duration=1h").stdout.strip()
    return token_kubeconfig(cluster, token, name, dest, namespace=ns)
