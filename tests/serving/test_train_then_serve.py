"""Train and serve without a cluster: the real ``kubeloop-train`` and ``kubeloop-serve``
console scripts as subprocesses, then real HTTP requests (docs/serving.md, "Train and
serve without a cluster"). Also: a port in use is a startup failure like any other."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.manifest_tools import ROOT
from tests.serving.test_serve_process import Process, _command


def _train_command() -> list[str]:
    exe = shutil.which("kubeloop-train")
    return [exe] if exe else [sys.executable, "-m", "kubeloop_runtime.train.cli"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "iris"
    proc = subprocess.run(
        [*_train_command(), "--spec", str(ROOT / "examples/iris/trainingjob.yaml"),
         "--output", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["succeeded"] is True
    return out


@pytest.mark.parametrize("given", ["result.json", "modelversion.yaml", "."])
def test_the_trainers_output_serves_directly(trained: Path, given: str) -> None:
    server = Process(["--model-version", str(trained / given)])
    try:
        server.wait_ready()
        r = httpx.post(
            f"{server.base}/v1/models/iris:predict",
            json={"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == [0, 2]
        meta = httpx.get(f"{server.base}/v2/models/iris", timeout=10).json()
        assert meta["platform"] == "kubeloop-onnx"  # the graph the trainer exported
        assert meta["parameters"]["modelVersion"] == "iris-v1"
    finally:
        assert server.stop()


def test_a_failed_run_is_refused_with_what_happened(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "model: iris\ndataset: {builtin: iris}\nestimator: {type: LogisticRegression}\n"
        "qualityGate: {thresholds: [{metric: accuracy, min: 1.01}]}\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [*_train_command(), "--spec", str(spec), "--output", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    server = Process(["--model-version", str(out / "result.json")])
    assert server.proc.wait(timeout=120) == 2
    _, err = server.proc.communicate()
    assert err.startswith(b"kubeloop-serve: ") and b"QualityGateFailed" in err


def test_a_port_in_use_exits_2_with_one_line(trained: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*_command(), "--model-version", str(trained),
             "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"kubeloop-serve: refused to start: cannot listen on 127.0.0.1:{port}" in proc.stderr
