"""Test harness for the real local control plane: the cluster, the operator process, waits.

Nothing here fakes the API server: ``Cluster`` drives hack/cluster.sh and talks to the real
kube-apiserver; ``OperatorProcess`` runs the real ``kubeloop-operator`` as a subprocess.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml
from kubernetes import client, config

T = TypeVar("T")

# The kwok tier: namespaces with these annotations get, on every pod, the kwok node's selector
# (PodNodeSelector admission) and a toleration of its taint (PodTolerationRestriction), so
# their pods are simulated by kwok (and the test kubelet). Pods of every other namespace run
# on the real node of hack/node.sh. The node and its taint: hack/cluster/node.yaml.
KWOK_TIER_ANNOTATIONS: Mapping[str, str] = {
    "scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
    "scheduler.alpha.kubernetes.io/defaultTolerations": (
        '[{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]'
    ),
}


def wait_for(
    fn: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except AssertionError as e:  # let fn assert, and keep the last message
            last_exc = e
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from last_exc


class Sampler:
    """Calls :meth:`sample` every ``interval`` seconds in a thread, from ``with`` to its end:
    the base of the fault tests' watchdogs (what must hold at every moment)."""

    interval = 0.5

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
                self.samples += 1
            except Exception as e:  # the test's own reads are not under test
                self.failed(e)

    def sample(self) -> None:
        raise NotImplementedError

    def failed(self, e: Exception) -> None:
        """A sample could not be taken; a violation unless a subclass knows better."""
        self.violations.append(f"{type(self).__name__}: {e!r}")


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    """The condition ``type_`` in ``obj``'s ``status.conditions``; {} when it is not there."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def is_true(obj: Mapping[str, Any] | None, type_: str) -> bool:
    """Whether ``obj`` has condition ``type_`` with status True."""
    return condition(obj, type_).get("status") == "True"


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` in Prometheus text ``text`` whose labels
    include ``labels``; None when there is none."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    repo: Path
    kubeconfig: Path
    bin_dir: Path

    @classmethod
    def up(cls, repo: Path) -> Cluster:
        out = subprocess.run(
            [str(repo / "hack" / "cluster.sh"), "up"],
            check=False,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"hack/cluster.sh up failed:\n{out.stderr}")
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in out.stdout.splitlines()
            if line.startswith("export ")
        )
        kubeconfig = Path(exports["KUBECONFIG"])
        bin_dir = Path(exports["PATH"].split(":", 1)[0])
        return cls(repo=repo, kubeconfig=kubeconfig, bin_dir=bin_dir)

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    def api_client(self, **overrides: Any) -> client.ApiClient:
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return client.ApiClient(cfg)

    def impersonating(self, user: str, groups: Sequence[str] = ()) -> client.ApiClient:
        """An ApiClient that acts as ``user`` (e.g. system:serviceaccount:ns:name)."""
        c = self.api_client()
        c.set_default_header("Impersonate-User", user)
        for g in groups:
            # The client sends one header per name; repeated groups are joined by the server.
            c.set_default_header("Impersonate-Group", g)
        return c

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            check=False,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({out.returncode}):\n{out.stderr}{out.stdout}"
            )
        return out

    def install_crds(self, crd_dir: Path) -> None:
        if not (crd_dir / "kustomization.yaml").exists():
            return  # the API issue adds them
        self.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(crd_dir))
        names = [
            d["metadata"]["name"]
            for f in sorted(crd_dir.glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text())
            if d and d.get("kind") == "CustomResourceDefinition"
        ]
        for n in names:
            self.kubectl("wait", "--for=condition=Established", f"crd/{n}", "--timeout=60s")


OPERATOR_NAMESPACE = "kubeloop-system"
OPERATOR_SERVICE_ACCOUNT = "kubeloop-operator"


def operator_kubeconfig(cluster: Cluster, dest: Path) -> Path:
    """A kubeconfig that authenticates as the operator's own ServiceAccount.

    Installs exactly the RBAC of manifests/base (namespace, ServiceAccount, ClusterRole,
    ClusterRoleBinding, the leader-election Role and RoleBinding; built with kustomize) and
    mints a token for the ServiceAccount with the TokenRequest API, so an operator started
    with this kubeconfig has the permissions the install grants, no more.
    """
    rendered = cluster.kubectl("kustomize", str(cluster.repo / "manifests" / "base")).stdout
    wanted = {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
    docs = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in wanted]
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    return service_account_kubeconfig(cluster, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, dest)


def service_account_kubeconfig(
    cluster: Cluster, namespace: str, service_account: str, dest: Path
) -> Path:
    """A kubeconfig that authenticates as ``service_account`` with a TokenRequest token:
    that account's permissions, no more."""
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=24h"
    ).stdout.strip()
    return token_kubeconfig(cluster, token, service_account, dest)


def token_kubeconfig(
    cluster: Cluster,
    token: str,
    user: str,
    dest: Path,
    *,
    context: str | None = None,
    namespace: str | None = None,
) -> Path:
    """A kubeconfig for the cluster that authenticates with a bearer ``token`` only."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cl = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
    context_body = {"cluster": "kubeloop", "user": user}
    if namespace:
        context_body["namespace"] = namespace
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubeloop", "cluster": cl["cluster"]}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context or user, "context": context_body}],
        "current-context": context or user,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(cfg))
    return dest


@dataclass
class OperatorProcess:
    """The real operator, as a subprocess, restricted to ``namespaces``.

    It authenticates with ``kubeconfig``: the operator ServiceAccount's (see
    ``operator_kubeconfig``) in the fixtures, so every integration test also proves that
    the RBAC in manifests/base is sufficient.

    Leader election is off unless ``env`` turns it on (``KUBELOOP_LEADER_ELECTION=true``,
    with a Lease name of the test's own): tests run one operator per namespace, in
    parallel, and the failover tests install the Lease Role themselves.
    """

    cluster: Cluster
    workdir: Path
    kubeconfig: Path | None = None
    namespaces: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        self.health_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig or self.cluster.kubeconfig),
            "KUBELOOP_NAMESPACES": ",".join(self.namespaces),
            "KUBELOOP_METRICS_PORT": str(self.metrics_port),
            "KUBELOOP_HEALTH_PORT": str(self.health_port),
            "KUBELOOP_LOG_FORMAT": "plain",
            "KUBELOOP_POLL_INTERVAL": "1",
            "KUBELOOP_WATCH_TIMEOUT": "30",
            "KUBELOOP_BACKOFF": "0.5",
            "KUBELOOP_RUNTIME_IMAGE": "kubeloop/runtime:test",
            "KUBELOOP_LEADER_ELECTION": "false",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubeloop"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._healthy, timeout=60, what=f"the operator to answer (log: {self.log_path})")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited: {self.log_path.read_text()[-4000:]}")
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash or an OOM kill would do."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            return str(r.read().decode())

    def writes(self) -> float:
        """Writes this process sent to the API server so far (POST, PUT, PATCH, DELETE), by
        its own ``rest_client_requests_total``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("rest_client_requests_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
                if labels.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def settled(self, quiet: float = 2.0, timeout: float = 120.0) -> None:
        """Wait until the work queues are empty and no reconcile ran for ``quiet`` seconds."""

        def reconciles() -> float:
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in self.metrics().splitlines()
                if line.startswith("controller_runtime_reconcile_total{")
            )

        def depth() -> float:
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in self.metrics().splitlines()
                if line.startswith("workqueue_depth{")
            )

        deadline = time.monotonic() + timeout
        last, since = reconciles(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = reconciles()
            if now != last or depth() > 0:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
        raise AssertionError(f"the operator did not settle within {timeout:.0f}s")
