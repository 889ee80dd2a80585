"""Runs a real Prometheus (Debian's package) for tests, scraping targets given to it.

Static targets stand in for Kubernetes service discovery (Debian's build has none); each
target carries the labels our relabeling rules would give it in a cluster (namespace,
pod, inferenceservice, role), so dashboard queries see the same series shape.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Target:
    job: str
    address: str  # host:port
    labels: Mapping[str, str] = field(default_factory=dict)


class Prometheus:
    def __init__(self, workdir: Path, port: int, targets: Sequence[Target], interval: str = "1s"):
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        jobs: dict[str, list[dict[str, Any]]] = {}
        for t in targets:
            jobs.setdefault(t.job, []).append({"targets": [t.address], "labels": dict(t.labels)})
        self.config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {"job_name": job, "static_configs": cfgs} for job, cfgs in sorted(jobs.items())
            ],
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        exe = shutil.which("prometheus")
        if exe is None:
            raise RuntimeError("prometheus is not installed (apt-get install -y prometheus)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config))
        self.proc = subprocess.Popen(
            [
                exe,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=(self.workdir / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(
            f"prometheus did not start: {(self.workdir / 'prometheus.log').read_text()}"
        )

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; raises with Prometheus' own error for a bad expression."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                doc = json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"query failed: {expr}\n{e.read().decode()}") from e
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def targets_up(self) -> dict[str, bool]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as r:
            doc = json.load(r)
        return {t["scrapeUrl"]: t["health"] == "up" for t in doc["data"]["activeTargets"]}
