"""Helpers for the static manifest tests: find kubectl, build kustomizations, walk pods."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _k8s_version() -> str:
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if line.startswith("K8S_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("hack/versions.env has no K8S_VERSION")


def kubectl() -> str:
    """$KUBECTL, else the kubectl hack/build-control-plane.sh builds, else one on PATH."""
    env = os.environ.get("KUBECTL")
    if env:
        assert Path(env).is_file(), f"KUBECTL={env} does not exist"
        return env
    cache = Path(os.environ.get("KUBELOOP_CACHE") or Path.home() / ".cache" / "kubeloop")
    built = cache / "bin" / f"kubernetes-{_k8s_version()}" / "kubectl"
    if built.is_file():
        return str(built)
    found = shutil.which("kubectl")
    assert found, (
        f"kubectl not found: set KUBECTL, run hack/build-control-plane.sh ({built}), "
        "or put kubectl on PATH"
    )
    return found


@cache
def kustomize(path: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize <path>` (relative to the repository root), parsed."""
    r = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, f"kubectl kustomize {path} failed:\n{r.stderr}"
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}


def pod_specs(objs: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objs:
        keys = POD_TEMPLATE_PATHS.get(o["kind"])
        if keys is None:
            continue
        spec: Any = o
        for k in keys:
            spec = spec[k]
        yield f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}", spec


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the restricted Pod Security Standard (plus a read-only
    root filesystem, which we require too)."""
    bad: list[str] = []
    psc = spec.get("securityContext") or {}
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        bad.append("host namespaces")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            bad.append(f"hostPath volume {v['name']}")
    containers = (spec.get("initContainers") or []) + spec["containers"]
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c["name"]

        def eff(key: str, sc: dict[str, Any] = sc) -> Any:
            return sc.get(key, psc.get(key))

        if eff("runAsNonRoot") is not True:
            bad.append(f"{name}: runAsNonRoot is not true")
        if eff("runAsUser") == 0:
            bad.append(f"{name}: runAsUser 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile is not RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: readOnlyRootFilesystem is not true")
    return bad
