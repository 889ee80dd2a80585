"""A real S3-compatible server for the tests: versitygw over a temporary directory.

versitygw (Apache-2.0) is built by hack/build-control-plane.sh into
``~/.cache/kubeloop/bin/versitygw-<version>/``. Its posix backend serves each top-level
directory of its root as a bucket, so :meth:`S3Server.make_bucket` is a ``mkdir``. It
listens on loopback (the process tier) or on the real node's bridge address (pods reach
the host there), never on an outside interface.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ACCESS_KEY = "kubeloop-test"
SECRET_KEY = "kubeloop-test-secret-key"  # a test server's key, not a credential of anything
REGION = "us-east-1"


def _versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def versitygw_binary() -> Path:
    """The versitygw that hack/build-control-plane.sh built (``$VERSITYGW`` overrides)."""
    env = os.environ.get("VERSITYGW")
    if env:
        return Path(env)
    cache = Path(os.environ.get("KUBELOOP_CACHE") or Path.home() / ".cache" / "kubeloop")
    return cache / "bin" / f"versitygw-{_versions()['VERSITYGW_VERSION']}" / "versitygw"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class S3Server:
    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The variables a client needs (what the operator puts in a pod)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> S3Server:
        binary = versitygw_binary()
        if not binary.is_file():
            raise AssertionError(f"{binary} is missing: run hack/build-control-plane.sh")
        data, meta = self.root / "data", self.root / "meta"
        data.mkdir(parents=True, exist_ok=True)
        meta.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port(self.host)
        log = (self.root / "versitygw.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--access",
                ACCESS_KEY,
                "--secret",
                SECRET_KEY,
                "--region",
                REGION,
                "--port",
                f"{self.host}:{self.port}",
                "--quiet",
                "posix",
                "--sidecar",
                str(meta),
                str(data),
            ],
            env={"PATH": os.environ.get("PATH", "")},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"versitygw exited: {(self.root / 'versitygw.log').read_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"versitygw did not listen on {self.endpoint}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def make_bucket(self, name: str) -> str:
        (self.root / "data" / name).mkdir(parents=True, exist_ok=True)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One versitygw on loopback for the session; tests make their own buckets."""
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment pointed at the server (as a pod's would be)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server.env
