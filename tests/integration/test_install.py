"""The install manifests, applied to the real control plane: they apply, their pods are
admitted under the restricted Pod Security Standard, and the operator's RBAC is tight.

The install namespaces join the kwok tier here (kwok runs no containers, so images are never
pulled) and the manifests are applied for real rather than dry-run: the Deployments' pods
must pass admission to exist at all. tests/integration/test_real_node.py installs the same
manifests (the local overlay) on the real node, where every pod runs.
"""

from __future__ import annotations

from kubernetes import client

from tests.integration.harness import KWOK_TIER_ANNOTATIONS, Cluster, wait_for

INSTALL_NAMESPACES = ("kubeloop-system", "kubeloop-monitoring")
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate"}


def test_base_applies_with_server_side_dry_run(cluster: Cluster, api: client.ApiClient) -> None:
    # A dry run creates no namespace: the base's namespaced objects need theirs to exist.
    kwok_tier_namespaces(api)
    out = cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        str(cluster.repo / "manifests" / "base"),
    )
    assert "kubeloop-operator" in out.stdout


def kwok_tier_namespaces(api: client.ApiClient) -> None:
    """Create (or mark) the install namespaces so that their pods go to the kwok node, and
    drop an artifact claim of another install (the local overlay's storage class): a claim's
    class cannot change."""
    core = client.CoreV1Api(api)
    try:
        pvc = core.read_namespaced_persistent_volume_claim("kubeloop-artifacts", "default")
    except client.ApiException as e:
        if e.status != 404:
            raise
    else:
        if pvc.spec.storage_class_name != "standard":
            core.delete_namespaced_persistent_volume_claim("kubeloop-artifacts", "default")
            wait_for(
                lambda: (
                    not core.list_namespaced_persistent_volume_claim(
                        "default", field_selector="metadata.name=kubeloop-artifacts"
                    ).items
                ),
                timeout=60,
                what="the other install's artifact claim to go",
            )
    for ns in INSTALL_NAMESPACES:
        meta = {"name": ns, "annotations": dict(KWOK_TIER_ANNOTATIONS)}
        try:
            core.create_namespace({"metadata": meta})
        except client.ApiException as e:
            if e.status != 409:
                raise
            core.patch_namespace(ns, {"metadata": {"annotations": dict(KWOK_TIER_ANNOTATIONS)}})


def test_kind_overlay_applies_and_every_pod_is_admitted_as_restricted(
    cluster: Cluster, api: client.ApiClient
) -> None:
    kwok_tier_namespaces(api)
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        str(cluster.repo / "manifests" / "overlays" / "kind"),
    )
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    for ns in INSTALL_NAMESPACES:
        labels = core.read_namespace(ns).metadata.labels or {}
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", ns
    deployments = [
        d for ns in INSTALL_NAMESPACES for d in apps.list_namespaced_deployment(ns).items
    ]
    names = {f"{d.metadata.namespace}/{d.metadata.name}" for d in deployments}
    assert "kubeloop-system/kubeloop-operator" in names
    assert len(deployments) >= 3, names  # operator, Prometheus, Grafana

    def all_available() -> bool:
        for d in deployments:
            cur = apps.read_namespaced_deployment(d.metadata.name, d.metadata.namespace)
            if (cur.status.available_replicas or 0) < (cur.spec.replicas or 1):
                # Say why: a pod rejected by admission shows up as a ReplicaSet event.
                return False
        return True

    wait_for(all_available, timeout=120, what=f"every install Deployment to be available: {names}")
    for ns in INSTALL_NAMESPACES:
        for p in core.list_namespaced_pod(ns).items:
            for c in p.spec.containers:
                sc = c.security_context
                assert sc is not None and sc.allow_privilege_escalation is False, p.metadata.name
                assert sc.capabilities is not None and sc.capabilities.drop == ["ALL"]


def test_operator_rbac_has_no_wildcards_secrets_or_escalation(
    cluster: Cluster, api: client.ApiClient
) -> None:
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        str(cluster.repo / "manifests" / "base"),
    )
    rendered = cluster.kubectl("kustomize", str(cluster.repo / "manifests" / "base")).stdout
    import yaml

    roles = [
        d
        for d in yaml.safe_load_all(rendered)
        if d
        and d["kind"] in ("ClusterRole", "Role")
        and d["metadata"]["name"] == "kubeloop-operator"
    ]
    assert len(roles) == 1
    for rule in roles[0]["rules"]:
        assert "*" not in rule.get("apiGroups", []), rule
        assert "*" not in rule.get("resources", []), rule
        assert not FORBIDDEN_VERBS & set(rule["verbs"]), rule
        assert "secrets" not in rule.get("resources", []), rule
    # What the server says the ServiceAccount may do agrees: no secrets, no impersonation.
    auth = client.AuthorizationV1Api(api)
    sa = "system:serviceaccount:kubeloop-system:kubeloop-operator"
    for verb, resource, group in (
        ("get", "secrets", ""),
        ("list", "secrets", ""),
        ("impersonate", "users", ""),
        ("escalate", "clusterroles", "rbac.authorization.k8s.io"),
        ("create", "pods", ""),
    ):
        review = auth.create_subject_access_review(
            {
                "spec": {
                    "user": sa,
                    "resourceAttributes": {"verb": verb, "resource": resource, "group": group},
                }
            }
        )
        assert review.status.allowed is False, (verb, resource)
