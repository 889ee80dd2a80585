"""The ModelVersion controller (the registry) against the real control plane.

ModelVersions are created directly, as a TrainingJob (or a user importing a model) would;
their artifact files are written into the store the operator can see, so it verifies them.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from kubeloop.kube import Kube
from kubeloop.registry import resolve_alias
from kubeloop_runtime import api
from tests.integration.harness import Cluster, OperatorProcess, condition, is_true, wait_for

TIMEOUT = 60


def model_version(
    namespace: str, version: int, sha256: str, aliases: list[str] | None = None
) -> dict[str, Any]:
    """A ModelVersion as a user would write it by hand: no labels (the operator adds them)."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": f"iris-v{version}", "namespace": namespace},
        "spec": {
            "model": "iris",
            "version": version,
            "task": "classification",
            "artifact": {
                "uri": f"pvc://kubeloop-artifacts/{namespace}/import-{version}/model.skops",
                "sha256": sha256,
                "format": "skops",
                "sizeBytes": 11,
            },
            "framework": {"python": "3.11", "sklearn": "1.5", "numpy": "2.0", "pandas": "2.2"},
            "signature": {
                "inputs": [{"name": "x", "dtype": "float64"}],
                "output": {"dtype": "int64", "classes": [0, 1]},
            },
            "metrics": {"accuracy": 0.9 + version / 100},
            "dataset": {"sha256": "c" * 64, "rows": 10, "columns": 2, "source": "test"},
            "aliases": aliases or [],
        },
    }


def write_artifact(root: Path, namespace: str, version: int, content: bytes) -> str:
    path = root / namespace / f"import-{version}" / "model.skops"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def get(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    obj = kube.get(api.API_VERSION, "ModelVersion", ns, name)
    assert obj is not None
    return obj


def confirmed(obj: dict[str, Any]) -> list[str]:
    return list((obj.get("status") or {}).get("aliases") or [])


def ready(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    obj = get(kube, ns, name)
    return obj if is_true(obj, "Ready") else None


class HolderWatch:
    """Follows every change of the namespace's ModelVersions through a watch and records,
    after each one, how many versions show ``alias`` in status.aliases.

    A watch delivers every resourceVersion in order, so this sees each state the API server
    held, not a sample of them.
    """

    def __init__(self, api_client: client.ApiClient, namespace: str, alias: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.alias = alias
        self.state: dict[str, list[str]] = {}
        self.max_holders = 0
        self.history: list[tuple[str, ...]] = []
        self._w = watch.Watch()
        self._ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HolderWatch:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        self._w.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        listing = self.custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.MODELVERSIONS
        )
        for item in listing["items"]:
            self._observe(item)
        self._ready.set()
        try:
            self._follow(listing["metadata"]["resourceVersion"])
        except Exception:
            if not self._stopping:  # closing the stream on exit is expected
                raise

    def _follow(self, resource_version: str) -> None:
        for event in self._w.stream(
            self.custom.list_namespaced_custom_object,
            api.GROUP,
            api.VERSION,
            self.namespace,
            api.MODELVERSIONS,
            resource_version=resource_version,
            timeout_seconds=120,
        ):
            if event["type"] == "DELETED":
                self.state.pop(event["object"]["metadata"]["name"], None)
            else:
                self._observe(event["object"])

    def _observe(self, obj: dict[str, Any]) -> None:
        self.state[obj["metadata"]["name"]] = confirmed(obj)
        holders = tuple(sorted(n for n, a in self.state.items() if self.alias in a))
        if not self.history or self.history[-1] != holders:
            self.history.append(holders)
        self.max_holders = max(self.max_holders, len(holders))


def test_alias_moves_without_ever_having_two_holders(
    kube: Kube,
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    ns = namespace
    root = tmp_path / "artifacts"  # the operator fixture's KUBELOOP_ARTIFACT_ROOT
    sha1 = write_artifact(root, ns, 1, b"model one!!")
    sha2 = write_artifact(root, ns, 2, b"model two!!")

    with HolderWatch(kube.api_client, ns, "production") as seen:
        kube.create(model_version(ns, 1, sha1, aliases=["production"]))
        kube.create(model_version(ns, 2, sha2))
        wait_for(lambda: ready(kube, ns, "iris-v2"), timeout=TIMEOUT, what="iris-v2 Ready")

        def v1_holds() -> dict[str, Any] | None:
            obj = get(kube, ns, "iris-v1")
            done = condition(obj, "AliasesConfirmed").get("status") == "True"
            return obj if done and "production" in confirmed(obj) else None

        v1 = wait_for(v1_holds, timeout=TIMEOUT, what="production confirmed on iris-v1")
        assert condition(v1, "Ready")["reason"] == "ArtifactVerified"
        assert condition(v1, "ArtifactVerified")["status"] == "True"
        assert condition(v1, "AliasesConfirmed")["status"] == "True"
        # The operator added the labels that list a model's versions.
        assert v1["metadata"]["labels"][api.LABEL_MODEL] == "iris"
        assert v1["metadata"]["labels"][api.LABEL_VERSION] == "1"
        listed = cluster.kubectl(
            "get", "modelversions", "-n", ns, "-l", "kubeloop.io/model=iris", "-o", "name"
        ).stdout.split()
        assert sorted(listed) == [
            "modelversion.kubeloop.io/iris-v1",
            "modelversion.kubeloop.io/iris-v2",
        ]

        # The user moves production to v2, exactly as docs/registry.md says.
        cluster.kubectl(
            "patch", "mv", "iris-v2", "-n", ns, "--type=json",
            "-p", '[{"op":"add","path":"/spec/aliases/-","value":"production"}]',
        )  # fmt: skip

        def moved() -> bool:
            vs = kube.list(api.API_VERSION, "ModelVersion", ns, labels={api.LABEL_MODEL: "iris"})
            holder = resolve_alias(vs, "iris", "production")
            return holder is not None and holder["metadata"]["name"] == "iris-v2"

        wait_for(moved, timeout=TIMEOUT, what="production to move to iris-v2")
        v1, v2 = get(kube, ns, "iris-v1"), get(kube, ns, "iris-v2")
        assert confirmed(v1) == [] and v1["spec"]["aliases"] == []
        assert confirmed(v2) == ["production"] and v2["spec"]["aliases"] == ["production"]
        wait_for(
            lambda: seen.history and seen.history[-1] == ("iris-v2",),
            timeout=10,
            what="the watch to see the end of the move",
        )
    assert seen.max_holders == 1, seen.history
    assert ("iris-v1",) in seen.history  # v1 did hold it before

    # The printed columns show aliases.
    out = cluster.kubectl("get", "mv", "-n", ns, "iris-v2").stdout
    assert "production" in out


def test_a_version_that_is_not_ready_never_takes_an_alias(
    kube: Kube, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    ns = namespace
    root = tmp_path / "artifacts"
    sha1 = write_artifact(root, ns, 1, b"model one!!")
    kube.create(model_version(ns, 1, sha1, aliases=["production"]))
    wait_for(
        lambda: confirmed(get(kube, ns, "iris-v1")) == ["production"],
        timeout=TIMEOUT,
        what="production on iris-v1",
    )
    # v2's recorded sha256 does not match its file: ChecksumMismatch, not Ready.
    write_artifact(root, ns, 2, b"model two!!")
    kube.create(model_version(ns, 2, "d" * 64, aliases=["production"]))

    def mismatch() -> dict[str, Any] | None:
        obj = get(kube, ns, "iris-v2")
        c = condition(obj, "AliasesConfirmed")
        return obj if c.get("reason") == "VersionNotReady" else None

    v2 = wait_for(mismatch, timeout=TIMEOUT, what="iris-v2 waiting for Ready")
    assert condition(v2, "Ready")["status"] == "False"
    assert condition(v2, "Ready")["reason"] == "ChecksumMismatch"
    assert condition(v2, "ArtifactVerified")["reason"] == "ChecksumMismatch"
    assert confirmed(v2) == []
    assert confirmed(get(kube, ns, "iris-v1")) == ["production"]

    # v3's file is missing: ArtifactMissing.
    kube.create(model_version(ns, 3, "e" * 64))

    def missing() -> dict[str, Any] | None:
        obj = get(kube, ns, "iris-v3")
        return obj if condition(obj, "Ready").get("status") == "False" else None

    v3 = wait_for(missing, timeout=TIMEOUT, what="iris-v3 Ready=False")
    assert condition(v3, "Ready")["reason"] == "ArtifactMissing"
    assert v3["status"]["phase"] == "Failed"


def test_without_the_store_versions_are_ready_but_unverified(
    kube: Kube, namespace: str, make_operator: Any
) -> None:
    ns = namespace
    make_operator(namespaces=[ns], env={"KUBELOOP_ARTIFACT_ROOT": ""})
    kube.create(model_version(ns, 1, "f" * 64, aliases=["staging"]))
    v1 = wait_for(lambda: ready(kube, ns, "iris-v1"), timeout=TIMEOUT, what="iris-v1 Ready")
    assert condition(v1, "Ready")["reason"] == "ArtifactNotVerifiable"
    assert condition(v1, "ArtifactVerified")["status"] == "Unknown"
    wait_for(
        lambda: confirmed(get(kube, ns, "iris-v1")) == ["staging"],
        timeout=TIMEOUT,
        what="staging confirmed",
    )


def test_a_new_version_costs_one_label_patch_and_one_status_write(
    kube: Kube, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    """Every write the operator makes to a hand-made version, seen through a watch (which
    delivers each resourceVersion): its labels once, its status once, then nothing."""
    ns = namespace
    sha = write_artifact(tmp_path / "artifacts", ns, 1, b"model one!!")
    custom = client.CustomObjectsApi(kube.api_client)
    listing = custom.list_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.MODELVERSIONS)
    changes: list[dict[str, Any]] = []
    w = watch.Watch()
    stopping = threading.Event()

    def follow() -> None:
        try:
            _follow()
        except Exception:
            if not stopping.is_set():  # closing the stream on exit is expected
                raise

    def _follow() -> None:
        for event in w.stream(
            custom.list_namespaced_custom_object,
            api.GROUP,
            api.VERSION,
            ns,
            api.MODELVERSIONS,
            resource_version=listing["metadata"]["resourceVersion"],
            timeout_seconds=60,
        ):
            if event["type"] == "MODIFIED":
                changes.append(event["object"])

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    kube.create(model_version(ns, 1, sha))
    wait_for(lambda: ready(kube, ns, "iris-v1"), timeout=TIMEOUT, what="iris-v1 Ready")
    operator.settled()
    stopping.set()
    w.stop()
    t.join(timeout=70)
    labelled = [o for o in changes if (o.get("status") or {}) == {}]
    with_status = [o for o in changes if o.get("status")]
    assert len(labelled) == 1, [o["metadata"].get("labels") for o in labelled]
    assert len(with_status) == 1, [o["status"] for o in with_status]
    final = with_status[0]
    assert final["metadata"]["labels"][api.LABEL_MODEL] == "iris"
    assert {c["type"] for c in final["status"]["conditions"]} == {
        "Ready",
        "ArtifactVerified",
        "AliasesConfirmed",
    }
