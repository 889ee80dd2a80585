"""The iris walkthrough of examples/iris/README.md, end to end, as a new user runs it.

Every kubectl step of the README runs here with the built kubectl against the real control
plane (in a test namespace instead of `default`), and its curl bodies are sent, as written,
to the real kubeloop-serve behind the predictor pod. Only the port-forward is replaced by
the pod's own address (the test kubelet runs the server there).
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import Cluster, OperatorProcess, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris"


def readme_commands(readme: Path = EXAMPLE / "README.md") -> list[str]:
    """The shell commands of a README's code blocks, continuation lines joined."""
    text = readme.read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def post(url: str, body: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=body.encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return dict(json.load(r))
    except urllib.error.HTTPError as e:
        raise AssertionError(f"POST {url} {body} -> {e.code}: {e.read().decode()}") from e


def test_iris_walkthrough(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,
    kubelet: Any,
    operator: OperatorProcess,
) -> None:
    commands = readme_commands()
    kubectl_steps = [c for c in commands if c.startswith("kubectl ")]
    curls = [c for c in commands if c.startswith("curl ")]
    assert len(kubectl_steps) >= 8 and len(curls) >= 4, commands

    server_url = ""
    for step in kubectl_steps:
        args = shlex.split(step)[1:]
        if args[0] == "port-forward":
            # A port-forward needs a kubelet; the test kubelet serves on the pod IP instead.
            server_url = _serving_pod_url(kube, namespace, kubelet)
            continue
        if args[0] == "delete":
            continue  # clean-up: the namespace goes at the end of the test
        args = [a.replace("examples/iris/", f"{EXAMPLE}/") for a in args]
        cluster.kubectl("-n", namespace, *args, timeout=300)

    assert server_url, "the README forwards the predictor Service"
    mv = kube.get(api.API_VERSION, "ModelVersion", namespace, "iris-v1")
    assert mv is not None and mv["spec"]["metrics"]["accuracy"] >= 0.9

    answers = []
    for c in curls:
        argv = shlex.split(c)
        url = argv[argv.index("-s") + 1].replace("localhost:8080", server_url)
        if "-d" not in argv:
            with urllib.request.urlopen(url, timeout=10) as r:
                answers.append(json.load(r))
            continue
        body = argv[argv.index("-d") + 1]
        if "<id from the prediction>" in body:
            prediction_id = answers[0]["id"]
            body = body.replace("<id from the prediction>", prediction_id)
        answers.append(post(url, body))

    v1, v2, meta, feedback = answers[:4]
    assert v1["predictions"] == [0, 2]  # setosa and virginica, as the README's rows are
    assert v2["outputs"][0]["data"] == [0]
    assert [i["name"] for i in meta["inputs"]] or meta["inputs"]
    assert feedback, "feedback is acknowledged"


def _serving_pod_url(kube: Kube, namespace: str, kubelet: Any) -> str:
    pods = kube.list("v1", "Pod", namespace, labels={api.LABEL_INFERENCESERVICE: "iris"})
    server = wait_for(
        lambda: pods and kubelet.server_for(pods[0]["metadata"]["name"]),
        what="the real kubeloop-serve behind the iris predictor pod",
    )
    url = str(server.url)
    wait_for(lambda: _ready(url), timeout=60, what="the server to be ready")
    return url


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False
