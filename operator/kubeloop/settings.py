"""Operator settings, parsed once at startup from the environment into a frozen object.

Every knob the operator has is here, with its environment variable and default. Handlers
receive the parsed object through kopf's memo; nothing else reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from e
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r}: expected a number") from e


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    return tuple(x.strip() for x in raw.split(",") if x.strip())


@dataclass(frozen=True)
class Settings:
    # The one image that trains (kubeloop-train) and serves (kubeloop-serve).
    runtime_image: str = "kubeloop/runtime:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    # PersistentVolumeClaim holding model artifacts, in each namespace that trains or serves.
    artifact_pvc: str = "kubeloop-artifacts"
    # Where the operator itself can read the artifact store (for sha256 checks); "" = cannot.
    artifact_root: str = ""
    # Object storage defaults for pods whose spec.storage leaves them unset ("" / None:
    # the pod's own environment decides).
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_path_style: bool | None = None
    # Namespaces to watch; empty means cluster-wide.
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int = 8080
    health_port: int = 8081
    log_format: str = "json"  # "json" in the cluster, "plain" on a terminal
    # How often polled work is looked at again (seconds): unfinished training runs and
    # the closed loop's signals, as delayed keys in the work queues.
    poll_interval: float = 10.0
    # kopf tuning (tests shorten these).
    watch_timeout: int = 300
    backoff: float = 5.0
    # How the operator reads serving pods' signals for the closed loop.
    signal_timeout: float = 2.0
    # Reconciles of different objects run in parallel on this many threads per controller.
    workers: int = 4
    # The operator-level resync: every cached object is reconciled again this often
    # (seconds, jittered). A backstop only: watch events drive every reconcile.
    resync_period: float = 600.0
    # Leader election on a coordination.k8s.io Lease (two replicas, one writes).
    leader_election: bool = True
    lease_name: str = "kubeloop-operator"
    lease_namespace: str = "kubeloop-system"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    # This replica's name in the Lease (the pod's name, from the Downward API); "" = the
    # host name and a random suffix.
    identity: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        log_format = e.get("KUBELOOP_LOG_FORMAT", "json")
        if log_format not in ("json", "plain"):
            raise SettingsError(f"KUBELOOP_LOG_FORMAT={log_format!r}: expected json or plain")
        pull = e.get("KUBELOOP_IMAGE_PULL_POLICY", "IfNotPresent")
        if pull not in ("Always", "IfNotPresent", "Never"):
            raise SettingsError(
                f"KUBELOOP_IMAGE_PULL_POLICY={pull!r}: expected Always, IfNotPresent or Never"
            )
        return cls(
            runtime_image=e.get("KUBELOOP_RUNTIME_IMAGE", cls.runtime_image),
            image_pull_policy=pull,
            artifact_pvc=e.get("KUBELOOP_ARTIFACT_PVC", cls.artifact_pvc),
            artifact_root=e.get("KUBELOOP_ARTIFACT_ROOT", ""),
            s3_endpoint=e.get("KUBELOOP_S3_ENDPOINT", ""),
            s3_region=e.get("KUBELOOP_S3_REGION", ""),
            s3_path_style=(
                _bool(e, "KUBELOOP_S3_PATH_STYLE", False)
                if e.get("KUBELOOP_S3_PATH_STYLE")
                else None
            ),
            namespaces=_list(e, "KUBELOOP_NAMESPACES"),
            metrics_port=_int(e, "KUBELOOP_METRICS_PORT", cls.metrics_port),
            health_port=_int(e, "KUBELOOP_HEALTH_PORT", cls.health_port),
            log_format=log_format,
            poll_interval=_float(e, "KUBELOOP_POLL_INTERVAL", cls.poll_interval),
            watch_timeout=_int(e, "KUBELOOP_WATCH_TIMEOUT", cls.watch_timeout, minimum=1),
            backoff=_float(e, "KUBELOOP_BACKOFF", cls.backoff),
            signal_timeout=_float(e, "KUBELOOP_SIGNAL_TIMEOUT", cls.signal_timeout),
            workers=_int(e, "KUBELOOP_WORKERS", cls.workers, minimum=1),
            resync_period=_float(e, "KUBELOOP_RESYNC_PERIOD", cls.resync_period),
            leader_election=_bool(e, "KUBELOOP_LEADER_ELECTION", cls.leader_election),
            lease_name=e.get("KUBELOOP_LEASE_NAME", cls.lease_name),
            # The operator's own namespace (the Downward API's POD_NAMESPACE in the cluster).
            lease_namespace=e.get("KUBELOOP_LEASE_NAMESPACE")
            or e.get("POD_NAMESPACE")
            or cls.lease_namespace,
            lease_duration=_float(e, "KUBELOOP_LEASE_DURATION", cls.lease_duration),
            renew_deadline=_float(e, "KUBELOOP_RENEW_DEADLINE", cls.renew_deadline),
            retry_period=_float(e, "KUBELOOP_RETRY_PERIOD", cls.retry_period),
            identity=e.get("POD_NAME", ""),
        )
