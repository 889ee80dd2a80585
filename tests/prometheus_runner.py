"""Runs a real Prometheus (Debian's package, ``/usr/bin/prometheus``) for tests.

Two ways to give it targets:

- **Static targets** (:class:`Target`): a job, an address and the labels the target should
  carry, for quick tests.
- **The in-cluster configuration** (:meth:`Prometheus.from_cluster_config`): the scrape jobs
  of ``manifests/monitoring/prometheus/prometheus.yml`` with their real ``relabel_configs``
  and ``honor_labels``. Debian's build has no Kubernetes service discovery, so each
  ``kubernetes_sd_configs`` (role ``pod``) becomes a ``file_sd_configs`` file, and
  :meth:`Prometheus.discover` writes into it the targets Kubernetes pod discovery would
  produce for the given pod objects (one per container port, with the
  ``__meta_kubernetes_*`` labels). Prometheus itself then applies the real relabel rules, so
  the series carry exactly the labels (namespace, pod, inferenceservice, role, ...) they
  would in a cluster, and a wrong rule shows up as an empty dashboard panel.

Targets can change while Prometheus runs (file discovery); :meth:`wait_for_targets` waits
until the active targets are the expected ones and have been scraped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Target:
    job: str
    address: str  # host:port
    labels: Mapping[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sanitize(name: str) -> str:
    """A Kubernetes label or annotation name as a Prometheus label name suffix."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_discovery_targets(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What Kubernetes pod discovery (role ``pod``) yields for one pod object (a dict as
    the API returns it): one target per container port, or one without a port when no
    container declares any; ``[]`` for a pod without an IP."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if not ip:
        return []
    base: dict[str, str] = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_uid": meta.get("uid", ""),
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
        "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
        "__meta_kubernetes_pod_ready": _ready(status),
    }
    for k, v in (meta.get("labels") or {}).items():
        base[f"__meta_kubernetes_pod_label_{_sanitize(k)}"] = v
        base[f"__meta_kubernetes_pod_labelpresent_{_sanitize(k)}"] = "true"
    for k, v in (meta.get("annotations") or {}).items():
        base[f"__meta_kubernetes_pod_annotation_{_sanitize(k)}"] = v
        base[f"__meta_kubernetes_pod_annotationpresent_{_sanitize(k)}"] = "true"
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            base["__meta_kubernetes_pod_controller_kind"] = ref["kind"]
            base["__meta_kubernetes_pod_controller_name"] = ref["name"]
    out: list[dict[str, Any]] = []
    for c in spec.get("containers") or []:
        for port in c.get("ports") or []:
            labels = {
                **base,
                "__meta_kubernetes_pod_container_name": c["name"],
                "__meta_kubernetes_pod_container_image": c.get("image", ""),
                "__meta_kubernetes_pod_container_init": "false",
                "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
            }
            out.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": labels})
    if not out:
        out.append({"targets": [ip], "labels": base})
    return out


def _ready(status: Mapping[str, Any]) -> str:
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            return "true" if c.get("status") == "True" else "false"
    return "unknown"


class Prometheus:
    """A Prometheus process with the given scrape configs (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        scrape_configs: Sequence[Mapping[str, Any]],
        *,
        interval: str = "1s",
        port: int | None = None,
        pod_jobs: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.interval_seconds = _seconds(interval)
        self.pod_jobs = tuple(pod_jobs)
        self.config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [dict(c) for c in scrape_configs],
        }
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def static(
        cls, workdir: Path, targets: Sequence[Target], *, interval: str = "1s", **kw: Any
    ) -> Prometheus:
        """Each job scrapes its static targets, which carry the given labels."""
        jobs: dict[str, list[dict[str, Any]]] = {}
        for t in targets:
            jobs.setdefault(t.job, []).append({"targets": [t.address], "labels": dict(t.labels)})
        configs = [{"job_name": j, "static_configs": c} for j, c in sorted(jobs.items())]
        return cls(workdir, configs, interval=interval, **kw)

    @classmethod
    def from_cluster_config(
        cls, workdir: Path, config: Path, *, interval: str = "1s", **kw: Any
    ) -> Prometheus:
        """The scrape jobs of an in-cluster config, pod discovery replaced by file discovery.

        Jobs with only static targets (e.g. Prometheus scraping itself on localhost:9090)
        are left out: their addresses mean nothing here. Rule files are left out too.
        """
        doc = yaml.safe_load(config.read_text())
        sd_dir = workdir / "sd"
        configs: list[dict[str, Any]] = []
        pod_jobs: list[str] = []
        for job in doc.get("scrape_configs") or []:
            sds = job.get("kubernetes_sd_configs")
            if not sds:
                continue
            roles = {sd.get("role") for sd in sds}
            if roles != {"pod"}:
                raise ValueError(
                    f"job {job['job_name']}: only role: pod discovery is emulated, got {roles}"
                )
            new = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
            new.pop("scrape_interval", None)  # the test's global interval applies
            new["file_sd_configs"] = [
                {"files": [str(sd_dir / f"{job['job_name']}.json")], "refresh_interval": "1s"}
            ]
            configs.append(new)
            pod_jobs.append(job["job_name"])
        return cls(workdir, configs, interval=interval, pod_jobs=pod_jobs, **kw)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Prometheus:
        exe = shutil.which("prometheus")
        if exe is None:
            raise RuntimeError("prometheus is not installed (apt-get install -y prometheus)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.pod_jobs:
            self.discover([])
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.proc = subprocess.Popen(
            [
                exe,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
            ],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"prometheus did not start:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    # ------------------------------------------------------------------ discovery

    def discover(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Offer ``pods`` to every pod-discovery job, as the Kubernetes API would list them;
        each job's relabel rules decide what it scrapes. Replaces the previous set."""
        groups = [g for p in pods for g in pod_discovery_targets(p)]
        sd_dir = self.workdir / "sd"
        sd_dir.mkdir(parents=True, exist_ok=True)
        for job in self.pod_jobs:
            path = sd_dir / f"{job}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(groups, indent=1, sort_keys=True))
            os.replace(tmp, path)  # atomic: Prometheus never reads half a file

    # ------------------------------------------------------------------ HTTP API

    def _get(self, path: str, params: Mapping[str, str | Sequence[str]] | None = None) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                doc = json.load(r)
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"GET {path} {dict(params or {})}: {e.read().decode()}") from e
        if doc.get("status") != "success":
            raise PrometheusError(f"GET {path} {dict(params or {})}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now; raises :class:`PrometheusError` with Prometheus' own
        message for a bad expression."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        params: dict[str, str | Sequence[str]] = {}
        if match is not None:
            params["match[]"] = [match]
        return sorted(self._get(f"/api/v1/label/{urllib.parse.quote(label)}/values", params))

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets", {"state": "active"})["activeTargets"])

    def wait_for_targets(
        self,
        expected: Callable[[list[dict[str, Any]]], bool],
        *,
        timeout: float = 30.0,
        what: str = "the expected targets",
    ) -> list[dict[str, Any]]:
        """Wait until ``expected(active targets)`` holds and every active target is up.

        File discovery reaches the scrape manager in batches (every 5 s in Prometheus 2.x),
        so a change takes up to ~5 s plus a scrape to show.
        """
        deadline = time.monotonic() + timeout
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            targets = self.targets()
            if targets and expected(targets) and all(t["health"] == "up" for t in targets):
                return targets
            time.sleep(0.25)
        summary = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {summary}")

    def wait_for_scrapes(self, n: int = 2, timeout: float = 30.0) -> None:
        """Wait until every active target has been scraped ``n`` more times from now."""
        # lastScrape is RFC 3339 with the server's clock (the same machine here).
        since = time.time() + (n - 1) * self.interval_seconds
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            targets = self.targets()
            if targets and all(_ts(t["lastScrape"]) > since for t in targets):
                return
            time.sleep(self.interval_seconds / 4)
        raise AssertionError(f"targets not scraped {n} times within {timeout:.0f}s")


class PrometheusError(AssertionError):
    """Prometheus answered an error (a bad query, usually); carries its message."""


def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    if m is None:
        raise ValueError(f"interval: expected e.g. 1s, 500ms or 1m, got {duration!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def _ts(rfc3339: str) -> float:
    """Seconds since the epoch of Prometheus' timestamps (nanoseconds, ``Z`` or offset)."""
    m = re.fullmatch(r"(.+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {rfc3339!r}")
    base = dt.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac
