"""The README's main job, `make up`, as a new user runs it: its printed prediction comes from
a real predictor pod, and the curl it prints gets the same answer again.

Runs after test_real_node.py (whose clean-up leaves no Kubeloop Deployment in the cluster)
and cleans up the same way, so that the kwok tier never shares the cluster with an
in-cluster operator.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api as kl
from tests.integration.harness import Cluster
from tests.integration.test_real_node import (
    INSTALL_NAMESPACES,
    NODE,
    NODE_DIR,
    assert_real,
    delete_deployments,
    delete_kubeloop_objects,
    node_sh,
    pods,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_afterwards(api: client.ApiClient, kube: Kube) -> Iterator[None]:
    yield
    core = client.CoreV1Api(api)
    delete_kubeloop_objects(kube, core, "default")
    for ns in INSTALL_NAMESPACES:
        delete_deployments(client.AppsV1Api(api), core, ns)


def test_make_up_prints_a_prediction_from_a_real_pod(
    cluster: Cluster, api: client.ApiClient, clean_afterwards: None
) -> None:
    out = subprocess.run(
        ["make", "up"], cwd=REPO, capture_output=True, text=True, timeout=1200, check=False
    )
    assert out.returncode == 0, f"make up failed:\n{out.stderr[-4000:]}\n{out.stdout[-4000:]}"
    text = out.stdout
    # The prediction is the first JSON line of what it prints.
    first = next(line for line in text.splitlines() if line.startswith("{"))
    assert json.loads(first)["predictions"] == [0, 2], text
    assert f"http://{NODE['NODE_IP']}:30090/" in text

    core = client.CoreV1Api(api)
    served = pods(core, "default", f"{kl.LABEL_INFERENCESERVICE}=iris")
    assert len(served) == 1
    assert_real(served[0])

    # The curl it prints, run as printed, answers the same.
    m = re.search(r"^\s*(curl -s http://\S+ \\\n.*)$", text, flags=re.M)
    assert m, text
    cmd = m.group(1).replace("\\\n", " ")
    again = subprocess.run(
        shlex.split(cmd), capture_output=True, text=True, timeout=30, check=False
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["predictions"] == [0, 2]


def _iptables(cmd: str) -> str:
    return subprocess.run([cmd + "-save"], capture_output=True, text=True, check=True).stdout


def test_node_down_leaves_nothing_behind_and_up_brings_it_back(
    cluster: Cluster, api: client.ApiClient
) -> None:
    """`hack/node.sh down` (as `make down` runs it) removes every rule, chain, bridge,
    mount, network namespace and cgroup the node made, and restores the sysctls."""
    # What `up` found before it changed sysctls (it keeps them for `down`).
    saved = dict(
        line.split(" ", 1) for line in (NODE_DIR / "sysctl.saved").read_text().splitlines()
    )
    assert "net.ipv4.ip_forward" in saved, saved
    node_sh("down")
    try:
        for cmd in ("iptables", "ip6tables"):
            rules = [line for line in _iptables(cmd).splitlines() if "KUBE" in line]
            assert not rules, f"{cmd} still has: {rules[:10]}"
        links = subprocess.run(
            ["ip", "-o", "link"], check=False, capture_output=True, text=True
        ).stdout
        assert NODE["NODE_BRIDGE"] not in links
        assert not [p for p in Path("/sys/fs/cgroup").glob("*/kubepods")], "kubepods cgroups"
        node_dir = NODE_DIR
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(node_dir)) or "/run/netns/cni-" in line
        ]
        assert not mounts, mounts[:10]
        assert not list(Path("/run/netns").glob("cni-*")), "pod network namespaces"
        procs = subprocess.run(
            ["pgrep", "-f", str(node_dir)], check=False, capture_output=True, text=True
        )
        assert not procs.stdout.strip(), procs.stdout
        for key, value in saved.items():
            now = Path("/proc/sys", key.replace(".", "/")).read_text().strip()
            assert now == value.strip(), f"{key} is {now}, was {value} before the node"
    finally:
        node_sh("up")
    node = client.CoreV1Api(api).read_node(NODE["NODE_NAME"])
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
